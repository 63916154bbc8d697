"""The fixed cost of a call: ms per call on a few points, into a reused output.

    python benchmarks/call_overhead.py

A solver that asks for one Jacobian per step, or a fit that moves a few parameter sets
at a time, calls with small batches; what a call costs besides its kernel (argument
checks, finding the kernel, choosing serial or parallel) is then the whole price. The
compute-bound problems have the longest tapes (the MLP input Hessian has 14,000
instructions), so a per-call cost that grows with the tape shows there first. Writes
``benchmarks/results/call_overhead.md``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import fastest, measured_line, problem, table_head, write_result  # noqa: E402

import batchdiff as bd  # noqa: E402

PROBLEMS_TIMED = ("Rosenbrock n=10", "tanh MLP 8-16-16-1", "tanh MLP 8-16-16-1 input")
SIZES = (1, 32, 1000)


def main():
    rng = np.random.default_rng(0)
    lines = [measured_line("call_overhead.py", '`method="compiled"`, float64, ms per call '
                           "into a reused output (`out=`), fastest of 50."), "",
             *table_head("problem", "instructions", *(f"{n:,} points" for n in SIZES))]
    for name in PROBLEMS_TIMED:
        p = problem(name)
        g = getattr(bd, p.transform)(p.fn, method="compiled")
        X = p.points(max(SIZES), rng)
        out = g(X)
        cells = [f"{fastest(g, X[:n], out=out[:n], repeats=50) * 1e3:.3f}" for n in SIZES]
        lines.append(f"| {p.name} {p.transform} | {len(g.tape(X[:1]).instrs):,} | "
                     + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_result("call_overhead.md", lines)


if __name__ == "__main__":
    main()
