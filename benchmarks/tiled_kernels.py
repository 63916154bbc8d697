"""Tiled compiled kernels (SIMD across points) against the scalar ones, at 10^5 points.

    python benchmarks/tiled_kernels.py

``numba_compiled.print_kernel(..., tiled=True)`` prints each segment as a loop over a
tile of points that LLVM vectorises; by default it is chosen for tapes of
``TILED_MIN_OPS_PER_STORE`` or more operations per output stored. This times both into a reused buffer, float64, the
fastest of 9 calls each, and writes ``benchmarks/results/tiled.md``.

    python benchmarks/tiled_kernels.py --dtype float32 --only Lennard --rounds 3

times one dtype, the problems whose label contains a string, in several rounds, and
only prints (a full float32 run writes ``tiled_float32.md``).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from batchdiff.kernels import bounded, numba_compiled  # noqa: E402
from problems import PROBLEMS, chain, fastest, measured_line, write_result  # noqa: E402


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
    return fastest(g, X, out=out), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--only", default="", help="problems whose label contains this")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    lines = [measured_line("tiled_kernels.py", f"{dtype}, ms per call into a reused buffer."),
             "",
             "| problem | B | scalar | tiled | scalar / tiled |", "|---|---|---|---|---|"]
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    for label, make, f, X in cases(rng):
        if args.only not in label:
            continue
        X = X.astype(dtype)
        for _ in range(args.rounds):
            scalar, a = timed(make, f, X, False)
            tiled, b = timed(make, f, X, True)
            np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.max(np.abs(a)))
            lines.append(f"| {label} | {len(X):,} | {scalar * 1e3:.2f} | {tiled * 1e3:.2f} | "
                         f"{scalar / tiled:.2f} |")
            print(lines[-1], flush=True)
    if not args.only and args.rounds == 1:
        write_result("tiled.md" if dtype == np.float64 else f"tiled_{dtype}.md", lines)


if __name__ == "__main__":
    main()
