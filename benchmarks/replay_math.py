"""The replay interpreter with its own tanh, sin and cos against libm's, at 10^5 points.

    python benchmarks/replay_math.py

Times ``method="replay"`` into a reused buffer (fastest of 9 calls) on the problems with
``tanh``, ``sin`` or ``cos`` and a long sin chain, with the interpreter as shipped
(``numba_replay.OWN_MATH = True``: ``kernels/vector_math.py``'s float64 functions) and
with libm's calls, each result checked against the other; writes
``benchmarks/results/replay_math.md``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from batchdiff.kernels import numba_replay  # noqa: E402
from problems import fastest, measured_line, timing_cases, write_result  # noqa: E402

B = 100_000
PROBLEMS_TIMED = ("2-link arm", "tanh MLP 8-16-16-1", "tanh MLP 8-16-16-1 input")


def timed(own, make, f, X):
    numba_replay.OWN_MATH = own
    numba_replay.interpreter.cache_clear()
    g = make(f, method="replay")
    out = g(X)
    return fastest(g, X, out=out), out


def main():
    rng = np.random.default_rng(0)
    lines = [measured_line("replay_math.py", '`method="replay"`, float64, ms per call into '
                           "a reused buffer, B = 100,000."), "",
             "| problem | libm | own | libm / own |", "|---|---|---|---|"]
    for label, make, f, X in timing_cases(PROBLEMS_TIMED, rng, B):
        libm, a = timed(False, make, f, X)
        own, b = timed(True, make, f, X)
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13 * np.max(np.abs(a)))
        lines.append(f"| {label} | {libm * 1e3:.2f} | {own * 1e3:.2f} | {libm / own:.2f} |")
        print(lines[-1], flush=True)
    write_result("replay_math.md", lines)


if __name__ == "__main__":
    main()
