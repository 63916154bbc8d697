"""GPU comparison: batchdiff's CuPy back end against JAX and torch.func on the same GPU.

    python benchmarks/compare.py --gpu [--quick]

Rosenbrock n=10 Hessian and Lorenz-96 n=40 Jacobian at B = 10^6 points, float32 and
float64. Every method gets the same device arrays; results are checked against
batchdiff's NumPy reference interpreter on the first 1,000 points. Besides the times,
the table gives the share of the GPU's memory bandwidth the batchdiff kernel reaches:
bytes read and written (inputs once, outputs once) over its time, against a
device-to-device copy of the output array measured in the same run.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

import batchdiff as bd
from compare import jax_function, torch_function
from problems import PROBLEMS

GPU_PROBLEMS = ("Rosenbrock n=10", "Lorenz-96 n=40")


def _sync():
    import cupy
    cupy.cuda.Device().synchronize()


def gpu_time(fn, repeats=10):
    """Median seconds of ``fn`` with device synchronisation (after one warm-up call)."""
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(nbytes):
    """Bytes per second of a device-to-device copy of ``nbytes`` (read + write counted)."""
    import cupy
    src = cupy.ones(nbytes // 8, dtype=cupy.float64)
    dst = cupy.empty_like(src)
    t = gpu_time(lambda: dst.__setitem__(Ellipsis, src))
    return 2 * src.nbytes / t


def _jax(problem, X):
    fn = jax_function(problem)
    if fn is None:
        return None
    import jax
    xj = jax.dlpack.from_dlpack(X)
    return lambda: fn(xj).block_until_ready()


def _torch(problem, X):
    fn = torch_function(problem)
    if fn is None:
        return None
    import torch
    if not torch.cuda.is_available():
        return None
    xt = torch.from_dlpack(X)

    def run():
        out = fn(xt)
        torch.cuda.synchronize()
        return out
    return run


def main(out_dir, quick=False):
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    batch = 100_000 if quick else 1_000_000
    rng = np.random.default_rng(0)
    lines = [f"### GPU: {gpu}, B = {batch:,}", "",
             f"Measured with `python benchmarks/compare.py --gpu{' --quick' if quick else ''}` "
             f"on {time.strftime('%Y-%m-%d')}. Median ms per batch after a warm-up call.", "",
             "| problem | dtype | batchdiff | JAX jit(vmap) | torch.func vmap | "
             "batchdiff bandwidth | copy bandwidth | share |",
             "|---|---|---|---|---|---|---|---|"]
    status = 0
    for problem in (p for p in PROBLEMS if p.name in GPU_PROBLEMS):
        for dtype in (np.float32, np.float64):
            X_host = problem.points(batch, rng, dtype)
            X = cupy.asarray(X_host)
            g = getattr(bd, problem.transform)(problem.fn)
            result = g(X)
            ref = getattr(bd, problem.transform)(problem.fn, backend="numpy")(X_host[:1000])
            tol = 1e-4 if dtype == np.float32 else 1e-10
            scale = float(np.max(np.abs(ref)))
            err = float(np.max(np.abs(cupy.asnumpy(result[:1000]) - ref))) / scale
            if err > tol:
                print(f"MISMATCH {problem.name} {np.dtype(dtype).name}: rel. error {err:.1e}")
                status = 1
            t_bd = gpu_time(lambda: g(X))
            cells = [f"{t_bd * 1e3:.2f}"]
            for make in (_jax, _torch):
                fn = make(problem, X)
                if fn is None:
                    cells.append("n/a")
                    continue
                try:
                    t = gpu_time(fn, repeats=3)
                except Exception as e:          # out of memory, most often
                    cells.append(f"failed: {type(e).__name__}")
                    continue
                cells.append(f"{t * 1e3:.2f} ({t / t_bd:.1f}x)")
            moved = X.nbytes + result.size * result.itemsize
            bw = moved / t_bd
            copy_bw = copy_bandwidth(result.size * result.itemsize)
            lines.append(f"| {problem.name} {problem.transform} | {np.dtype(dtype).name} | "
                         + " | ".join(cells)
                         + f" | {bw / 1e9:.0f} GB/s | {copy_bw / 1e9:.0f} GB/s | "
                         f"{100 * bw / copy_bw:.0f}% |")
            print(lines[-1], flush=True)
            result = X = None            # free device memory before the next size
            cupy.get_default_memory_pool().free_all_blocks()
    text = "\n".join(lines) + "\n"
    safe = "".join(c if c.isalnum() else "_" for c in gpu).strip("_")
    with open(os.path.join(out_dir, f"gpu_{safe}.md"), "w") as f:
        f.write(text)
    print(text)
    return status
