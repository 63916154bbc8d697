"""Tiled compiled kernels (SIMD across points) against the scalar ones, at 10^5 points.

    python benchmarks/tiled_kernels.py

``numba_compiled.print_kernel(..., tiled=True)`` prints each segment as a loop over a
tile of points that LLVM vectorises; it is not chosen by default (see
``TILED_MIN_OPS_PER_STORE``). This times both into a reused buffer, float64, the
fastest of 9 calls each, and writes ``benchmarks/results/tiled.md``.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from batchdiff.kernels import bounded, numba_compiled  # noqa: E402
from problems import PROBLEMS, chain  # noqa: E402


def cases(rng):
    """``(label, transform, f, X)``: the problems of ``problems.py`` (the tanh MLP's
    gradient and Hessian among them) and a long chain's gradient."""
    for p in PROBLEMS:
        yield f"{p.name} {p.transform}", getattr(bd, p.transform), p.fn, p.points(
            p.batch, rng)
    yield "sin chain, 125 steps, grad", bd.grad, chain(125), rng.uniform(-1, 1, (100_000, 8))


def timed(make, f, X, tiled):
    numba_compiled.TILED_MIN_OPS_PER_STORE = 0 if tiled else None
    numba_compiled._kernels = bounded.LRU(bounded.MAX_KERNELS, on_evict=numba_compiled._unload)
    g = make(f, method="compiled")
    out = g(X)
    g(X, out=out)
    times = []
    for _ in range(9):
        t = time.perf_counter()
        g(X, out=out)
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    rng = np.random.default_rng(0)
    lines = [f"Measured with `python benchmarks/tiled_kernels.py` on {time.strftime('%Y-%m-%d')}"
             f" ({os.cpu_count()} cores), float64, ms per call into a reused buffer.", "",
             "| problem | B | scalar | tiled | scalar / tiled |", "|---|---|---|---|---|"]
    for label, make, f, X in cases(rng):
        scalar, a = timed(make, f, X, False)
        tiled, b = timed(make, f, X, True)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.max(np.abs(a)))
        lines.append(f"| {label} | {len(X):,} | {scalar * 1e3:.2f} | {tiled * 1e3:.2f} | "
                     f"{scalar / tiled:.2f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           "tiled.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
