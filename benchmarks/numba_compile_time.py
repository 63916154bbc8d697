"""Compile time of generated Numba kernels against tape length, scalar and tiled.

    python benchmarks/numba_compile_time.py [--sizes 125 500 2000]

For gradient tapes of chains ``t = sin(t) * x[k % 8] + 0.5`` (8 instructions a step;
``--step relu``: ``t = max(t, 0.1 t) * x[k % 8] + 0.5``, whose tapes hold ``max`` and
``where``),
it prints the kernel both ways (``numba_compiled.print_kernel(..., tiled=False/True)``)
and times writing, importing and compiling it for float64 into an empty kernel cache
(a temporary ``BATCHDIFF_CACHE_DIR``), each in a fresh process. The table goes to
``benchmarks/results/numba_compile.md`` (``numba_compile_relu.md`` with ``--step relu``).
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from problems import measured_line, write_result  # noqa: E402

CHILD = r"""
import sys, time, numpy as np
sys.path.insert(0, {here!r})
import batchdiff as bd
from batchdiff.kernels import cache, layout, numba_compiled
from problems import chain, relu_step
X = np.ones((4, 8))
tape = bd.grad(chain({steps}, step={step}), backend="numpy").tape(X)
source = numba_compiled.print_kernel(tape, np.float64, layout.sources_of([X], 4), tiled={tiled})
t = time.perf_counter()
cache.load(source, "bdk", np.float64, numba_compiled.compile_for)
print(len(tape.instrs), time.perf_counter() - t)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[125, 500, 2000])
    parser.add_argument("--step", choices=("sin", "relu"), default="sin",
                        help="the chain's step: np.sin or a leaky ReLU (max and where)")
    args = parser.parse_args(argv)
    step, name = (("np.sin", "numba_compile.md") if args.step == "sin"
                  else ("relu_step", "numba_compile_relu.md"))
    lines = [measured_line("numba_compile_time.py", f"float64, seconds, step {args.step}."), "",
             "| tape instructions | scalar kernel | tiled kernel (SIMD across points) |",
             "|---|---|---|"]
    for steps in args.sizes:
        cells = []
        for tiled in (False, True):
            with tempfile.TemporaryDirectory() as cache_dir:
                env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache_dir)
                out = subprocess.run([sys.executable, "-c", CHILD.format(
                    here=HERE, steps=steps, tiled=tiled, step=step)], env=env,
                    capture_output=True, text=True, check=True)
                n, seconds = out.stdout.split()
                cells.append(f"{float(seconds):.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_result(name, lines)
    print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
