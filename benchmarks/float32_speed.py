"""float32 against float64 on compute-bound tapes, compiled kernels, at 10^5 points.

    python benchmarks/float32_speed.py

Compute-bound tapes (many operations per output) are the ones where single precision
can pay: twice the SIMD lanes in a tiled kernel (16 floats against 8 doubles with
AVX-512) and half the bytes. This times ``method="compiled"`` into a reused buffer in
both dtypes, a call of each in turn, fastest of 25 rounds (so that load from elsewhere
on the machine hits both dtypes alike), checks the float32 result against the float64 one,
and writes ``benchmarks/results/float32.md``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import fastest_interleaved, measured_line, timing_cases, write_result  # noqa: E402

B = 100_000
PROBLEMS_TIMED = ("Lennard-Jones 4 atoms", "tanh MLP 8-16-16-1", "tanh MLP 8-16-16-1 input")


def main():
    rng = np.random.default_rng(0)
    lines = [measured_line("float32_speed.py", '`method="compiled"`, ms per call into a '
                           "reused buffer, B = 100,000, fastest of 25 rounds of one call in "
                           "each dtype."), "",
             "| problem | float64 | float32 | float64 / float32 | float32 max rel. error |",
             "|---|---|---|---|---|"]
    for label, transform, f, X in timing_cases(PROBLEMS_TIMED, rng, B):
        g = transform(f, method="compiled")
        xs = {dtype: X.astype(dtype) for dtype in (np.float64, np.float32)}
        results = {dtype: g(x) for dtype, x in xs.items()}
        best = fastest_interleaved([lambda d=d: g(xs[d], out=results[d]) for d in xs])
        times = dict(zip(xs, best))
        ref = results[np.float64]
        err = float(np.max(np.abs(results[np.float32] - ref)) / np.max(np.abs(ref)))
        lines.append(f"| {label} | {times[np.float64] * 1e3:.2f} | {times[np.float32] * 1e3:.2f}"
                     f" | {times[np.float64] / times[np.float32]:.2f} | {err:.1e} |")
        print(lines[-1], flush=True)
    write_result("float32.md", lines)


if __name__ == "__main__":
    main()
