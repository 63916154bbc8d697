"""The NumPy reference interpreter's time per point, against ``warmup.numpy_seconds``.

    python benchmarks/numpy_interpreter.py

``method="auto"`` runs a fresh process's first calls on the NumPy interpreter when
``warmup.numpy_seconds`` (1 ns per instruction and 7 ns per output, per point) says it
finishes sooner than loading Numba's kernels. This times the interpreter at 10^5 points
(fastest of 3, into a reused buffer) on the benchmark problems and prints the estimate
beside it. Writes ``benchmarks/results/numpy_interpreter.md``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from batchdiff.interpreter import evaluate  # noqa: E402
from batchdiff.kernels import warmup  # noqa: E402
from problems import PROBLEMS, fastest, measured_line, write_result  # noqa: E402

B = 100_000


def main():
    rng = np.random.default_rng(0)
    lines = [measured_line("numpy_interpreter.py", f"float64, B = {B:,}."), "",
             "| tape | ops | outputs | measured (ms) | estimate (ms) | estimate / measured |",
             "|---|---|---|---|---|---|"]
    for p in PROBLEMS:
        X = p.points(B, rng)
        tape = getattr(bd, p.transform)(p.fn).tape(X)
        out = np.empty((B, len(tape.outputs)))
        best = fastest(evaluate, tape, [X], B, np.float64, outs=[out], repeats=3, warmup=False)
        estimate = warmup.numpy_seconds(tape, B)
        lines.append(f"| {p.name} {p.transform} | {tape.num_ops} | {len(tape.outputs)} | "
                     f"{best * 1e3:.1f} | {estimate * 1e3:.1f} | {estimate / best:.2f} |")
        print(lines[-1], flush=True)
    write_result("numpy_interpreter.md", lines)


if __name__ == "__main__":
    main()
