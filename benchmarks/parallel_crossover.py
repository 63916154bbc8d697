"""Serial against parallel compiled kernels at small batches: where parallel starts to pay.

    python benchmarks/parallel_crossover.py

For five tapes from cheap (the 2-link arm's Jacobian, 9 ops) to costly (the Lennard-Jones
Hessian, 1002 ops) it loads each compiled kernel and times its serial and parallel entry
points at 512 to 65,536 points, into a reused buffer, fastest of 15 calls. What it shows
chose ``numba_exec.PARALLEL_MIN_SECONDS``: the serial work at which the two break even.
The table goes to ``benchmarks/results/parallel.md``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from batchdiff.kernels import layout, numba_compiled  # noqa: E402
from batchdiff.problems import arm, lennard_jones, lorenz96, rosenbrock  # noqa: E402
from problems import fastest, measured_line, table_head, write_result  # noqa: E402

SIZES = (512, 2048, 8192, 32768, 65536)
CASES = [("2-link arm jacobian", bd.jacobian, arm, 2),
         ("Rosenbrock n=10 grad", bd.grad, rosenbrock, 10),
         ("Rosenbrock n=10 hessian", bd.hessian, rosenbrock, 10),
         ("Lorenz-96 n=40 jacobian", bd.jacobian, lorenz96, 40),
         ("Lennard-Jones 4 atoms hessian", bd.hessian, lennard_jones, 12)]


def run(module, X, out, parallel):
    """One call of the kernel ``module``, serial or parallel, over ``X`` into ``out``."""
    numba_compiled.run(module, X, np.zeros(0), [out], parallel)


def main():
    rng = np.random.default_rng(0)
    lines = [measured_line("parallel_crossover.py", "float64: ms serial / ms parallel, the "
                           "faster in bold."), "",
             *table_head("tape", "ops", *(f"{b:,} points" for b in SIZES))]
    for name, transform, f, n in CASES:
        X = rng.uniform(-1, 1, (max(SIZES), n))
        if f is lennard_jones:
            X = np.array([0, 0, 0, 1.12, 0, 0, 0.56, 0.97, 0, 0.56, 0.32, 0.91]) + 0.05 * X
        tape = transform(f).tape(X)
        module = numba_compiled.kernel_module(tape, np.float64, layout.sources_of([X], len(X)),
                                              (len(tape.outputs),))
        out = np.zeros((len(X), len(tape.outputs)))
        cells = []
        for b in SIZES:
            s, p = (fastest(run, module, X[:b], out[:b], par, repeats=15, warmup=False) * 1e3
                    for par in (False, True))
            cells.append(f"**{s:.3f}** / {p:.3f}" if s <= p else f"{s:.3f} / **{p:.3f}**")
        lines.append(f"| {name} | {tape.num_ops} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_result("parallel.md", lines)


if __name__ == "__main__":
    main()
