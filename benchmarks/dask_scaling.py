"""Dask's overhead: the Rosenbrock-10 Hessian at 10^7 points on a LocalCluster vs in memory.

    python benchmarks/dask_scaling.py                    # 10^7 points, blocks of 10^6
    python benchmarks/dask_scaling.py --write            # and benchmarks/results/dask.md
    python benchmarks/dask_scaling.py --points 2000000   # a quicker run

Three measures of the Dask issue's targets, float64, ``method="compiled"`` (the kernel
is compiled, or found in the kernel cache, by this process first, so the workers start
warm):

- **throughput**: ``bd.hessian(rosenbrock)(X).sum(axis=0)`` with ``X`` a Dask array of
  blocks of ``--chunk`` points, persisted on a ``LocalCluster`` of 2 single-threaded
  worker processes (the batch is made on the workers; the sum reduces each block where
  it is computed, so no output leaves its worker), against one in-memory process using
  both cores on batches of ``--chunk`` points, each summed: a new result per batch, as
  Dask makes a new array per block, and (the best case) one buffer reused with ``out=``.
  Points per second each, the fastest of ``--repeat`` runs; the in-memory runs are made
  in a process of their own, before and after the Dask runs (run beside the workers,
  holding its batch and buffers, it slowed each worker's blocks 2-3x on this 2-core
  machine); target: Dask >= 0.8 x in memory.
- **first block**: the seconds from submitting a one-block computation (10,000 points)
  to each worker of a fresh cluster to its result, with a warm kernel cache, and the
  same for a second block (the difference is the worker's start-up: importing Numba and
  loading the kernel); the workers' Numba dispatchers then report cache hits and no
  compilation.
- **memory**: each worker's peak resident size during the throughput runs (``VmHWM``,
  reset before them by writing 5 to ``/proc/self/clear_refs``; Linux) less its resident
  size before, next to one block's output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from problems import RESULTS_DIR, rosenbrock  # noqa: E402

DIM = 10
GB = 1e9
START_POINTS = 10_000            # the blocks timed on fresh workers
RESULTS = os.path.join(RESULTS_DIR, "dask.md")


def hessian():
    return bd.hessian(rosenbrock, method="compiled")


# -- on the workers ---------------------------------------------------------------------------

def _status_bytes(field) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}: peak memory needs Linux")


def _reset_peak() -> int:
    """Reset this process's peak resident size; its resident size now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def _compile_stats() -> tuple:
    """(cache hits, cache misses) of every generated Numba kernel loaded in this process."""
    hits = misses = 0
    for name, module in list(sys.modules.items()):
        if name.startswith(("bdk_", "bdreplay_")):
            for fn in (getattr(module, "run_serial", None), getattr(module, "run_parallel", None)):
                if fn is not None and hasattr(fn, "stats"):
                    hits += sum(fn.stats.cache_hits.values())
                    misses += sum(fn.stats.cache_misses.values())
    return hits, misses


# -- the measures ------------------------------------------------------------------------------

def in_memory(points, chunk):
    """The in-memory process's run: ``run(reuse)`` -> seconds, on batches of ``chunk``.

    Each batch's result is summed. ``reuse``: every batch is written into one buffer
    (``out=``); else each call makes its result, as a plain loop does.
    """
    g = hessian()
    X = np.random.default_rng(0).uniform(-2.0, 2.0, (points, DIM))
    buf = np.zeros((chunk, DIM, DIM))
    g(X[:chunk], out=buf)                           # kernel loaded, buffer resident

    def run(reuse: bool) -> float:
        t0 = time.perf_counter()
        total = np.zeros((DIM, DIM))
        for start in range(0, points, chunk):
            part = X[start:start + chunk]
            total += (g(part, out=buf[:len(part)]) if reuse else g(part)).sum(axis=0)
        return time.perf_counter() - t0
    return run


def _in_memory_times(points, chunk, repeat) -> dict:
    """``in_memory``'s runs, ``repeat`` of each kind, taking turns: {kind: [seconds]}."""
    run = in_memory(points, chunk)
    times = {"fresh": [], "reused": []}
    for _ in range(repeat):
        times["fresh"].append(run(False))
        times["reused"].append(run(True))
    return times


def _in_memory_elsewhere(args) -> dict:
    """``_in_memory_times`` in a fresh process (spawned, so no cluster state is inherited)."""
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_in_memory_times, (args.points, args.chunk, args.repeat))


def first_blocks(client, chunk=START_POINTS) -> list:
    """Per worker: seconds from submitting a block pinned to it until its result, for a
    first block and then a second one: ``(0 or 1, seconds)``.

    The blocks are small: a large first block would also time the process's first
    touch of fresh memory (transparent huge pages made on demand: seconds for 1 GB
    here), which every process pays once, with Dask or without.
    """
    import dask.array as da
    g = hessian()
    workers = sorted(client.scheduler_info()["workers"])
    seconds = []
    for block in range(2):
        started, futures = {}, {}
        for k, worker in enumerate(workers):
            X = da.random.default_rng([block, k]).uniform(-2.0, 2.0, (chunk, DIM),
                                                          chunks=(chunk, DIM))
            started[worker] = time.perf_counter()
            futures[worker] = client.compute(g(X).sum(axis=0), workers=[worker])
        for worker, future in futures.items():
            future.result()
            seconds.append((block, time.perf_counter() - started[worker]))
    return seconds


def on_dask(client, points, chunk):
    """The Dask run: ``run()`` -> seconds, on a batch persisted on the workers."""
    import dask.array as da
    from distributed import wait
    X = da.random.default_rng(0).uniform(-2.0, 2.0, (points, DIM), chunks=(chunk, DIM)).persist()
    wait(X)

    def run() -> float:
        t0 = time.perf_counter()
        hessian()(X).sum(axis=0).compute()
        return time.perf_counter() - t0
    return run


def _rate(points, seconds) -> str:
    return f"{points / seconds / 1e6:.2f} M points/s ({seconds:.2f} s)"


def measure(args) -> dict:
    """Every measure, on a fresh LocalCluster (the kernel cache warmed here first)."""
    from distributed import Client, LocalCluster
    hessian()(np.random.default_rng(1).uniform(-2.0, 2.0, (3000, DIM)))  # warm the cache
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    m = {"cluster": time.perf_counter() - t0}
    try:
        m["firsts"] = first_blocks(client)
        m["compiles"] = client.run(_compile_stats)
        dask_run = on_dask(client, args.points, args.chunk)
        times = {"fresh": [], "reused": [], "dask": []}
        for _ in range(2):
            # in memory, before and after the Dask runs (the machine's load drifts), in a
            # process of its own that has exited before the workers run: its batch and
            # buffers, held beside the workers', slowed them down 2-3x here
            memory = _in_memory_elsewhere(args)
            times["fresh"] += memory["fresh"]
            times["reused"] += memory["reused"]
            if not times["dask"]:
                before = client.run(_reset_peak)
                times["dask"] = [dask_run() for _ in range(args.repeat)]
                peaks = client.run(_status_bytes, "VmHWM")
    finally:
        client.close()
        cluster.close()
    m.update({k: min(t) for k, t in times.items()})
    m["peaks"] = [peaks[w] - before[w] for w in sorted(peaks)]
    return m


def table(args, m) -> str:
    """The measures as a markdown table."""
    rows = [
        (f"in memory, 1 process, both cores, batches of {args.chunk:,}, a new result each",
         _rate(args.points, m["fresh"])),
        ("in memory, the same into one reused buffer (out=)", _rate(args.points, m["reused"])),
        (f"Dask, LocalCluster of 2 single-threaded worker processes, blocks of {args.chunk:,}",
         _rate(args.points, m["dask"])),
        ("Dask / in memory, new results (target >= 0.8)", f"{m['fresh'] / m['dask']:.2f}x"),
        ("Dask / in memory into a reused buffer", f"{m['reused'] / m['dask']:.2f}x"),
        ("LocalCluster start (2 worker processes)", f"{m['cluster']:.2f} s"),
        (f"first block ({START_POINTS:,} points) on each fresh worker, warm kernel cache",
         ", ".join(f"{s:.2f} s" for b, s in m["firsts"] if b == 0)),
        ("a second block on each worker",
         ", ".join(f"{s:.2f} s" for b, s in m["firsts"] if b == 1)),
        ("Numba kernels on the workers: cache hits / compilations",
         ", ".join(f"{h} / {c}" for h, c in m["compiles"].values())),
        ("load average of the machine after the runs (1, 5, 15 min)",
         ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"),
        ("peak memory per worker above its start, during the Dask runs",
         ", ".join(f"{p / GB:.2f} GB" for p in m["peaks"])
         + f" (one block's output: {args.chunk * DIM * DIM * 8 / GB:.2f} GB)"),
    ]
    return "\n".join([f"Rosenbrock-10 Hessian, {args.points:,} points, float64, "
                      "method='compiled', reduced per block by .sum(axis=0) "
                      "(`python benchmarks/dask_scaling.py`):", "",
                      "| measure | value |", "|---|---|"]
                     + [f"| {name} | {value} |" for name, value in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the fastest counts")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args(argv)
    text = table(args, measure(args))
    print(text)
    if args.write:
        with open(RESULTS, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
