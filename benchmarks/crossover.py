"""When does a compiled kernel pay for its compile time? The measurement behind auto.

    python benchmarks/crossover.py

For chains ``t = sin(t) * x[k % n] + 0.5`` of growing length (and two real problems),
it measures the compiled executor's compile time in a fresh kernel cache, and the run
time per point of replay and compiled kernels at B = 100,000 (float64), in this process.
The break-even work is ``compile / (replay - compiled)`` points: past it, compiling
first is faster than replaying. The table goes to ``benchmarks/results/crossover.md``.
"""
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["BATCHDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="bd-crossover-")
os.environ["BATCHDIFF_BACKGROUND_COMPILE"] = "0"

import batchdiff as bd  # noqa: E402
from batchdiff.kernels import layout, numba_compiled, numba_replay  # noqa: E402
from problems import chain, lennard_jones, measured_line, rosenbrock, write_result  # noqa: E402

B = 100_000


def median_time(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name, transform, f, dim, rng):
    X = rng.uniform(0.1, 0.9, size=(B, dim))
    tape = getattr(bd, transform)(f, backend="numpy").tape(X[:1])
    sources = layout.sources_of([X], B)
    S = np.empty(0)
    out = np.empty((B, len(tape.outputs)))
    numba_replay.run(tape, sources, X[:10], S, [out[:10]], False)     # interpreter loaded
    t0 = time.perf_counter()
    module = numba_compiled.kernel_module(tape, np.float64, sources, (len(tape.outputs),))
    compile_s = time.perf_counter() - t0
    t_replay = median_time(lambda: numba_replay.run(tape, sources, X, S, [out], True))
    t_compiled = median_time(lambda: numba_compiled.run(module, X, S, [out], True))
    gain = (t_replay - t_compiled) / B
    breakeven = compile_s / gain if gain > 0 else float("inf")
    row = (name, tape.num_ops, compile_s, t_replay * 1e3, t_compiled * 1e3, breakeven)
    print("{:28s} {:6d} ops  compile {:6.2f}s  replay {:8.2f} ms  compiled {:8.2f} ms  "
          "break-even {:.2e} points".format(*row), flush=True)
    return row


def main():
    rng = np.random.default_rng(0)
    rows = [measure(f"chain {s} steps (grad)", "grad", chain(s), 8, rng)
            for s in (25, 100, 250, 1000)]
    rows.append(measure("Rosenbrock n=10 hessian", "hessian", rosenbrock, 10, rng))
    rows.append(measure("Lennard-Jones 4 atoms hessian", "hessian", lennard_jones, 12, rng))
    lines = [measured_line("crossover.py", f"B = {B:,}, float64."), "",
             "| tape | ops | compile (s) | replay (ms) | compiled (ms) | break-even (points) |",
             "|---|---|---|---|---|---|"]
    lines += ["| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.1e} |".format(*r) for r in rows]
    write_result("crossover.md", lines)
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
