"""GPU comparison: batchdiff's CuPy back end against JAX and torch.func on the same GPU.

    python benchmarks/compare.py --gpu [--quick] [--only NAME]

Every problem of ``problems.py`` at B = 10^6 and 10^7 points (the sizes whose dense
output fits in ``MAX_OUTPUT_BYTES``; Rosenbrock n=100 at 10^5), float32 and float64.
Every method gets the same device arrays. batchdiff's result is checked against its
NumPy reference interpreter on the first 1,000 points, and JAX's and torch.func's
against batchdiff's; a mismatch is reported and makes the script fail.

The methods: batchdiff into a new array each call, batchdiff into a reused buffer
(``out=``), ``sparse=True`` where the problem's derivative has structural zeros (the
values ``(B, nnz)`` into a reused buffer), JAX ``jit(vmap(grad, jacfwd or hessian))``
and ``torch.func.vmap(grad, jacfwd or hessian)``. Besides the times, the table gives the
share of the GPU's memory bandwidth batchdiff's ``out=`` call reaches: bytes read and
written (inputs once, outputs once) over its time, against a device-to-device copy of
the output's size measured in the same run (read + write counted, as for the kernel).

JAX is told not to preallocate three quarters of the device
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``), so that the three libraries share it.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

import batchdiff as bd  # noqa: E402
from compare import jax_function, torch_function  # noqa: E402
from problems import PROBLEMS  # noqa: E402

MAX_OUTPUT_BYTES = 16e9        # dense output per call; JAX and torch need a few times that
BATCHES = (10**6, 10**7)
SPARSE_PROBLEMS = ("Rosenbrock n=100", "Lorenz-96 n=40", "Rosenbrock n=10")
CHECK_POINTS = 1000
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}
METHODS = ("batchdiff", "batchdiff out=", "batchdiff sparse, out=", "JAX jit(vmap)",
           "torch.func vmap")


def _sync():
    import cupy
    cupy.cuda.Device().synchronize()


def gpu_time(fn, repeats=10):
    """(fastest, median) seconds of ``fn`` with device synchronisation, after one warm-up."""
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def copy_bandwidth(nbytes):
    """Bytes per second of a device-to-device copy of ``nbytes`` (read + write counted)."""
    import cupy
    src = cupy.ones(max(int(nbytes) // 8, 1), dtype=cupy.float64)
    dst = cupy.empty_like(src)
    t = gpu_time(lambda: cupy.copyto(dst, src))[0]
    del src, dst
    _free()
    return 2 * (nbytes // 8) * 8 / t


def _free():
    import gc

    import cupy
    gc.collect()
    cupy.get_default_memory_pool().free_all_blocks()
    try:
        import torch
        torch.cuda.empty_cache()
    except Exception:       # noqa: BLE001  (no PyTorch, or no CUDA in it)
        pass


def versions() -> list:
    """Lines naming the device, driver, CUDA and library versions."""
    import cupy
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    driver, runtime = rt.driverGetVersion(), rt.runtimeGetVersion()
    found = [f"device: {name}, {props['multiProcessorCount']} SMs, "
             f"{props['totalGlobalMem'] / 2**30:.0f} GiB",
             f"CUDA driver API {driver // 1000}.{driver % 1000 // 10}, "
             f"runtime {runtime // 1000}.{runtime % 1000 // 10}",
             f"Python {platform.python_version()}, NumPy {np.__version__}, "
             f"CuPy {cupy.__version__}"]
    for module in ("jax", "torch", "numba"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            found.append(f"{module}: not installed")
    try:
        import subprocess
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True)
        found.append(f"nvidia-smi: {smi.stdout.strip()}")
    except OSError:
        pass
    return found


def _jax(problem, X):
    fn = jax_function(problem)
    if fn is None:
        return None
    import jax
    xj = jax.dlpack.from_dlpack(X)
    return lambda: fn(xj)


def _torch(problem, X):
    fn = torch_function(problem)
    if fn is None:
        return None
    import torch
    if not torch.cuda.is_available():
        return None
    xt = torch.from_dlpack(X)
    return lambda: fn(xt)


def _as_cupy(result):
    import cupy
    if isinstance(result, bd.SparseResult):
        result = result.to_dense()
    if hasattr(result, "block_until_ready"):
        result.block_until_ready()
    return result if isinstance(result, cupy.ndarray) else cupy.from_dlpack(result)


def batches_of(problem, dtype, quick=False):
    """The batch sizes a problem runs at: those whose dense output fits."""
    per_point = np.prod(problem.out_shape) * np.dtype(dtype).itemsize
    if quick:
        return [min(10**5, int(MAX_OUTPUT_BYTES // per_point))]
    fits = [b for b in BATCHES if b * per_point <= MAX_OUTPUT_BYTES]
    return fits or [10 ** int(np.log10(MAX_OUTPUT_BYTES // per_point))]


def contenders(problem, X):
    """name -> zero-argument call of every method on the device array ``X``."""
    g = problem.derivative()
    calls = {"batchdiff": lambda: g(X)}
    reused = g(X)
    calls["batchdiff out="] = lambda: g(X, out=reused)
    if problem.name in SPARSE_PROBLEMS:
        s = problem.derivative(sparse=True)
        values = s(X).values
        calls["batchdiff sparse, out="] = lambda: s(X, out=values)
    # torch.func first: JAX keeps the memory it has used in its own pool
    for name, make in (("torch.func vmap", _torch), ("JAX jit(vmap)", _jax)):
        fn = make(problem, X)
        if fn is not None:
            calls[name] = fn
    return calls, reused


def run_problem(problem, dtype, batch, rng):
    """One row: {method: (fastest, median, rel. error or None)} and the bandwidth."""
    import cupy
    X_host = problem.points(batch, rng, dtype)
    X = cupy.asarray(X_host)
    ref = getattr(bd, problem.transform)(problem.fn, backend="numpy")(X_host[:CHECK_POINTS])
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    row = {"problem": problem.name, "transform": problem.transform, "B": batch,
           "dtype": np.dtype(dtype).name}
    out_bytes = batch * int(np.prod(problem.out_shape)) * np.dtype(dtype).itemsize
    try:            # first, while the device's memory is free of the others' pools
        row["copy"] = copy_bandwidth(out_bytes)
    except Exception as e:     # noqa: BLE001
        print(f"  copy of {out_bytes:,} bytes: {e!r:.200}")
        row["copy"] = float("nan")
    calls, reused = contenders(problem, X)
    for name, fn in calls.items():
        try:
            result = _as_cupy(fn())
            err = float(cupy.max(cupy.abs(result[:CHECK_POINTS] - cupy.asarray(ref)))) / scale
            del result
            repeats = 10 if name.startswith("batchdiff") else 3 if "torch" in name else 5
            row[name] = gpu_time(fn, repeats) + (err,)
        except Exception as e:     # noqa: BLE001  (out of memory, most often)
            row[name] = f"failed: {type(e).__name__}"
            print(f"  {problem.name} {row['dtype']} B={batch:,} {name}: {e!r:.300}")
        _free()
    moved = X.nbytes + reused.size * reused.itemsize
    row["moved"] = moved
    del X, reused, calls
    _free()
    return row


def markdown(rows, head) -> str:
    methods = [m for m in METHODS if any(m in r for r in rows)]
    lines = head + ["", "Run time per batch in ms: the fastest of several calls after a "
                    "warm-up call (median in brackets), results on the device. "
                    "Ratios: JAX's and torch.func's time over batchdiff's (above 1: "
                    "batchdiff is faster). *share*: bytes read and written by batchdiff "
                    "`out=` over its time, against a device-to-device copy of the output's "
                    "size in the same run. *failed: OutOfMemoryError*: that library ran out "
                    "of the device's memory at that size (torch.func's Hessians and Jacobians "
                    "hold several B x n x n intermediates; it runs before JAX in each row, "
                    "as JAX keeps the memory it has used in its own pool).", "",
                    "| problem | dtype | B | " + " | ".join(methods)
                    + " | batchdiff out= GB/s | copy GB/s | share |",
                    "|---|---|---|" + "---|" * (len(methods) + 3)]
    bad = []
    for r in rows:
        best = r.get("batchdiff") if isinstance(r.get("batchdiff"), tuple) else None
        cells = []
        for m in methods:
            v = r.get(m)
            if v is None:
                cells.append("n/a")
            elif isinstance(v, str):
                cells.append(v)
            else:
                cell = f"{v[0] * 1e3:.2f} ({v[1] * 1e3:.2f})"
                if not m.startswith("batchdiff") and best:
                    cell += f" {v[0] / best[0]:.1f}x"
                if v[2] > TOLERANCE[np.dtype(r['dtype']).type]:
                    cell += f" **err {v[2]:.0e}**"
                    bad.append((r["problem"], r["dtype"], m))
                cells.append(cell)
        out = r.get("batchdiff out=")
        bw = r["moved"] / out[0] if isinstance(out, tuple) else float("nan")
        lines.append(f"| {r['problem']} {r['transform']} | {r['dtype']} | {r['B']:,} | "
                     + " | ".join(cells) + f" | {bw / 1e9:.0f} | {r['copy'] / 1e9:.0f} | "
                     f"{100 * bw / r['copy']:.0f}% |")
    return "\n".join(lines) + "\n", bad


def plot(rows, path, title):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = [m for m in METHODS if any(isinstance(r.get(m), tuple) for r in rows)]
    fig, ax = plt.subplots(figsize=(14, 5.5))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        xs = [i + k * width for i, r in enumerate(rows) if isinstance(r.get(m), tuple)]
        ys = [r[m][0] * 1e3 for r in rows if isinstance(r.get(m), tuple)]
        ax.bar(xs, ys, width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([f"{r['problem']}\n{r['dtype']}, B={r['B']:.0e}" for r in rows],
                       fontsize=7, rotation=60, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("ms per batch (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(out_dir, quick=False, only=None):
    head_versions = versions()
    print("\n".join(head_versions), flush=True)
    rng = np.random.default_rng(0)
    rows = []
    device = head_versions[0].split(",")[0].removeprefix("device: ")
    command = "python benchmarks/compare.py --gpu" + " --quick" * quick
    head = [f"### GPU: {device}", "",
            f"Measured with `{command}` on {time.strftime('%Y-%m-%d')}.", ""]
    head += [f"- {v}" for v in head_versions]
    safe = "".join(c if c.isalnum() else "_" for c in device).strip("_")
    for problem in PROBLEMS:
        if only and only.lower() not in problem.name.lower():
            continue
        for dtype in (np.float32, np.float64):
            for batch in batches_of(problem, dtype, quick):
                rows.append(run_problem(problem, dtype, batch, rng))
                text, bad = markdown(rows, head)
                print(text.splitlines()[-1], flush=True)
                with open(os.path.join(out_dir, f"gpu_{safe}.md"), "w") as f:
                    f.write(text)       # after every row: a crash keeps what was measured
    plot(rows, os.path.join(out_dir, f"gpu_{safe}.png"), f"{device}: ms per batch")
    print(text)
    if bad:
        print("MISMATCH:", bad)
        return 1
    return 0
