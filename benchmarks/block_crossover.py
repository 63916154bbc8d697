"""Where a product with a constant matrix should become a block instruction.

    python benchmarks/block_crossover.py                 # the networks below
    python benchmarks/block_crossover.py --networks 3-16-16-16-1 8-16-16-1

``block_trace.LINEAR_MIN`` and ``LINEAR_MIN_ROWS`` decide: ``W @ x`` with a constant ``W``
of at least that many entries or rows, and ``x`` not block-backed already, becomes one
``linear`` instruction; a smaller one is unrolled into scalar multiply-adds. For tanh MLPs ``n-w-...-w-1`` (fixed weights,
``batchdiff.problems.tanh_mlp``) this measures both ways, blocks forced on for every
product and forced off, for the gradient and the input Hessian: the tape's size, the
compiled kernel's compile time (a fresh process, an empty kernel cache), and the time per
point of replay and of the compiled kernel (fastest of several calls taking turns). The
table goes to ``benchmarks/results/block_crossover.md``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BATCHDIFF_BACKGROUND_COMPILE", "0")

import batchdiff as bd  # noqa: E402
from batchdiff import block_trace  # noqa: E402
from batchdiff.problems import tanh_mlp  # noqa: E402
from problems import fastest_interleaved, measured_line, table_head, write_result  # noqa: E402

SETTINGS = {"blocks": 1, "unrolled": 10 ** 9}      # both thresholds, for each way
COMPILE = """
import time
import numpy as np, batchdiff as bd
from batchdiff import block_trace
from batchdiff.kernels import layout, numba_compiled
from batchdiff.problems import tanh_mlp
block_trace.LINEAR_MIN = block_trace.LINEAR_MIN_ROWS = {linear_min}
tape = bd.{kind}(tanh_mlp({width}, {layers}, {inputs}))._program((({inputs},),),
                                                             np.float64).executable
sources = tuple(layout.sources_of([np.zeros((2, {inputs}))], 2))
start = time.perf_counter()
numba_compiled.kernel_module(tape, np.float64, sources, (len(tape.outputs),))
print(time.perf_counter() - start)
"""


def network(spec):
    """``(inputs, width, layers)`` of a spec ``"3-16-16-1"``."""
    sizes = [int(k) for k in spec.split("-")]
    return sizes[0], sizes[1], len(sizes) - 2


def compile_seconds(spec, kind, way) -> float:
    inputs, width, layers = network(spec)
    with tempfile.TemporaryDirectory() as cache:
        done = subprocess.run(
            [sys.executable, "-c", COMPILE.format(width=width, layers=layers, inputs=inputs,
                                                   kind=kind, linear_min=SETTINGS[way])],
            env=dict(os.environ, BATCHDIFF_CACHE_DIR=cache), capture_output=True, text=True,
            check=True)
    return float(done.stdout.split()[-1])


def measure(spec, kind, points, rng) -> list:
    inputs, width, layers = network(spec)
    X = rng.uniform(-1.0, 1.0, (points, inputs))
    f = tanh_mlp(width, layers, inputs)
    cells, calls = [], []
    default = block_trace.LINEAR_MIN, block_trace.LINEAR_MIN_ROWS
    for way, linear_min in SETTINGS.items():
        block_trace.LINEAR_MIN = block_trace.LINEAR_MIN_ROWS = linear_min
        try:
            tape = getattr(bd, kind)(f).tape(X[:1])
            for method in ("replay", "compiled"):
                g = getattr(bd, kind)(f, method=method)
                g(X[:1])                  # traced with this LINEAR_MIN, then compiled
                calls.append(lambda g=g: g(X))
        finally:
            block_trace.LINEAR_MIN, block_trace.LINEAR_MIN_ROWS = default
        cells.append((way, tape.num_ops, compile_seconds(spec, kind, way)))
    times = [t / points * 1e9 for t in fastest_interleaved(calls, repeats=5)]
    (_, ops_b, comp_b), (_, ops_u, comp_u) = cells
    return [spec, kind, f"{width * width:,}", f"{ops_b:,}", f"{ops_u:,}",
            f"{comp_b:.1f}", f"{comp_u:.1f}", *(f"{t:.0f}" for t in times),
            f"{times[3] / times[1]:.2f}"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=[
        "3-16-16-16-1", "3-23-23-23-1", "3-32-32-32-1", "8-16-16-1"])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--kinds", nargs="+", default=["grad", "hessian"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [measured_line("block_crossover.py", f"B = {args.points:,} points, float64, ns "
                           "per point, fastest of 5 calls taking turns; compile in a fresh "
                           "process with an empty kernel cache"), "",
             *table_head("network", "transform", "w x w entries", "ops, blocks", "ops, unrolled",
                         "compile s, blocks", "compile s, unrolled", "replay ns, blocks",
                         "compiled ns, blocks", "replay ns, unrolled", "compiled ns, unrolled",
                         "compiled unrolled / blocks")]
    for spec in args.networks:
        for kind in args.kinds:
            cells = measure(spec, kind, args.points, rng)
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    print(write_result("block_crossover.md", lines))


if __name__ == "__main__":
    main()
