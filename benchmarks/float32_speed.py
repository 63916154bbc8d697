"""float32 against float64 on compute-bound tapes, compiled kernels, at 10^5 points.

    python benchmarks/float32_speed.py

Compute-bound tapes (many operations per output) are the ones where single precision
can pay: twice the SIMD lanes in a tiled kernel (16 floats against 8 doubles with
AVX-512) and half the bytes. This times ``method="compiled"`` into a reused buffer in
both dtypes, fastest of 9 calls, checks the float32 result against the float64 one,
and writes ``benchmarks/results/float32.md``.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import timing_cases  # noqa: E402

B = 100_000
PROBLEMS_TIMED = ("Lennard-Jones 4 atoms", "tanh MLP 8-16-16-1", "tanh MLP 8-16-16-1 input")


def fastest(g, X, out, repeats=9):
    g(X, out=out)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        g(X, out=out)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    rng = np.random.default_rng(0)
    lines = [f"Measured with `python benchmarks/float32_speed.py` on {time.strftime('%Y-%m-%d')}"
             f" ({os.cpu_count()} cores), `method=\"compiled\"`, ms per call into a reused "
             "buffer, B = 100,000.", "",
             "| problem | float64 | float32 | float64 / float32 | float32 max rel. error |",
             "|---|---|---|---|---|"]
    for label, transform, f, X in timing_cases(PROBLEMS_TIMED, rng, B):
        g = transform(f, method="compiled")
        times, results = {}, {}
        for dtype in (np.float64, np.float32):
            x = X.astype(dtype)
            out = g(x)
            times[dtype] = fastest(g, x, out)
            results[dtype] = out
        ref = results[np.float64]
        err = float(np.max(np.abs(results[np.float32] - ref)) / np.max(np.abs(ref)))
        lines.append(f"| {label} | {times[np.float64] * 1e3:.2f} | {times[np.float32] * 1e3:.2f}"
                     f" | {times[np.float64] / times[np.float32]:.2f} | {err:.1e} |")
        print(lines[-1], flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "float32.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
