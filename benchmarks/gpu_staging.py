"""Writing C-contiguous leaves on a GPU: directly, or staged through a tiled transpose.

    python benchmarks/gpu_staging.py [--out benchmarks/results]

The values of a sparse result are C-contiguous ``(B, nnz)`` rows, as are a user's
C-contiguous ``out=`` arrays. A thread storing its own point's row makes a warp's
stores land a row apart; ``cupy_exec`` instead writes leaves of at least
``STAGE_MIN_WIDTH`` columns batch-fastest into scratch memory and copies them into
place with a tiled transpose. This times both ways (threshold 1: always staged; a huge
threshold: never) at B = 10^6, for sparse results of several widths and dense ``out=``,
and writes ``gpu_staging.md``.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from batchdiff.kernels import cupy_exec  # noqa: E402
from compare_gpu import gpu_time  # noqa: E402
from problems import lorenz96, rosenbrock  # noqa: E402


def diagonal(x):
    return np.sin(x) * x          # a diagonal Jacobian: sparse width n


def cases(cupy, batch, dtype):
    rng = np.random.default_rng(0)
    for n in (2, 4, 8, 16, 64):
        X = cupy.asarray(rng.uniform(-1, 1, (batch, n)).astype(dtype))
        yield f"diagonal Jacobian n={n}, sparse", bd.jacobian(diagonal, sparse=True), X, None
    for name, fn, n in (("Rosenbrock n=10 Hessian", rosenbrock, 10),
                        ("Lorenz-96 n=40 Jacobian", lorenz96, 40)):
        X = cupy.asarray(rng.uniform(-1, 1, (batch, n)).astype(dtype))
        transform = bd.hessian if "Hessian" in name else bd.jacobian
        yield f"{name}, sparse", transform(fn, sparse=True), X, None
        yield (f"{name}, dense C-contiguous out=", transform(fn), X,
               cupy.empty((batch, n, n), dtype=dtype))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "results"))
    parser.add_argument("--batch", type=int, default=10**6)
    args = parser.parse_args(argv)
    import cupy
    lines = [f"Measured with `python benchmarks/gpu_staging.py` on {time.strftime('%Y-%m-%d')}"
             f" ({cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}), "
             f"B = {args.batch:,}. Fastest of 10 calls, ms.", "",
             "| leaf | dtype | width | direct | staged | direct / staged |", "|---|---|---|---|---|---|"]
    default = cupy_exec.STAGE_MIN_WIDTH
    for dtype in (np.float32, np.float64):
        for label, g, X, out in cases(cupy, args.batch, dtype):
            if out is None:
                out = g(X).values                  # the reused values (B, nnz)
            times = {}
            for mode, threshold in (("direct", 10**9), ("staged", 1)):
                cupy_exec.STAGE_MIN_WIDTH = threshold
                times[mode] = gpu_time(lambda: g(X, out=out))[0]
            width = out.size // out.shape[0]
            lines.append(f"| {label} | {np.dtype(dtype).name} | {width} | "
                         f"{times['direct'] * 1e3:.3f} | {times['staged'] * 1e3:.3f} | "
                         f"{times['direct'] / times['staged']:.2f} |")
            print(lines[-1], flush=True)
    cupy_exec.STAGE_MIN_WIDTH = default
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "gpu_staging.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
