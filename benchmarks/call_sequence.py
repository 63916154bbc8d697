"""Every call's time, as a user's script makes them: the first 20 calls in a fresh process.

    python benchmarks/call_sequence.py
    python benchmarks/call_sequence.py --calls 10 --only Rosenbrock

For each problem of ``problems.PROBLEMS``, a fresh Python process imports batchdiff, makes
the default transform (``method="auto"``, results allocated by each call) and times each
of its first calls on the problem's batch, one after the other as a script would; then
the same with JAX ``jit(vmap(...))`` in a process of its own (its first call compiles).
batchdiff runs twice: with the kernel cache warm (the kernels compiled on disk by two
earlier processes that waited for their compiles, as on a user's later runs) and empty (a new ``BATCHDIFF_CACHE_DIR``,
as on a first run: compiles start in the background). The table goes to
``benchmarks/results/call_sequence.md``: milliseconds per call, and the settled time
(the fastest of the last five calls) that the later calls are compared with.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import PROBLEMS, measured_line, table_head, write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from problems import problem
p = problem({name!r})
X = p.points(p.batch, np.random.default_rng(0))
times = []
if {jax!r}:
    from compare import jax_function
    import jax.numpy as jnp
    start = time.perf_counter()
    fn = jax_function(p)
    Xj = jnp.asarray(X)
    for _ in range({calls}):
        t = time.perf_counter()
        np.asarray(fn(Xj))
        times.append(time.perf_counter() - t)
else:
    start = time.perf_counter()
    import batchdiff as bd
    g = getattr(bd, p.transform)(p.fn)
    for _ in range({calls}):
        t = time.perf_counter()
        g(X)
        times.append(time.perf_counter() - t)
    if {prime!r}:
        g(X)                                # every kernel it wants, compiled on disk
    bd.kernels.warmup.wait()                # no compile outlives the process to slow the next
print(json.dumps(times))
"""


def run_child(name, calls, jax=False, cache_dir=None, prime=False) -> list:
    env = dict(os.environ)
    if cache_dir is not None:
        env["BATCHDIFF_CACHE_DIR"] = cache_dir
    code = CHILD.format(here=HERE, name=name, calls=calls, jax=jax, prime=prime)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_jax() -> bool:
    import importlib.util
    return importlib.util.find_spec("jax") is not None


def _row(name, label, times) -> list:
    settled = min(times[-5:])
    late = max(times[1:]) if len(times) > 1 else float("nan")
    cells = [name, label, f"{settled * 1e3:.2f}", f"{late / settled:.1f}"]
    return cells + [" ".join(f"{t * 1e3:.1f}" for t in times)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--only", help="run the problems whose name contains this")
    args = parser.parse_args(argv)
    lines = [measured_line("call_sequence.py", "float64, each problem's batch, results "
                           "allocated by each call; ms per call in the order made, in a "
                           "fresh process; settled: the fastest of the last five calls; "
                           "worst later call: the slowest call after the first, over the "
                           "settled time"), "",
             *table_head("problem", "run", "settled ms", "worst later call / settled",
                         f"calls 1 to {args.calls}, ms")]
    jax = _has_jax()
    for p in PROBLEMS:
        if args.only and args.only not in p.name:
            continue
        for _ in range(2):        # the default cache warm: every kernel auto wants, on disk
            run_child(p.name, args.calls, prime=True)
        runs = [("batchdiff, warm cache", run_child(p.name, args.calls))]
        with tempfile.TemporaryDirectory() as empty:
            runs.append(("batchdiff, empty cache", run_child(p.name, args.calls,
                                                              cache_dir=empty)))
        if jax:
            runs.append(("JAX jit(vmap)", run_child(p.name, args.calls, jax=True)))
        for label, times in runs:
            cells = _row(p.name, label, times)
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    print(write_result("call_sequence.md", lines))


if __name__ == "__main__":
    main()
