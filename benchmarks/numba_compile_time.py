"""Compile time of generated Numba kernels against tape length, scalar and tiled.

    python benchmarks/numba_compile_time.py [--sizes 125 500 2000]

For gradient tapes of chains ``t = sin(t) * x[k % 8] + 0.5`` (8 instructions a step),
it prints the kernel both ways (``numba_compiled.print_kernel(..., tiled=False/True)``)
and times writing, importing and compiling it for float64 into an empty kernel cache
(a temporary ``BATCHDIFF_CACHE_DIR``), each in a fresh process. The table goes to
``benchmarks/results/numba_compile.md``.
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
from problems import chain
X = np.ones((4, 8))
tape = bd.grad(chain({steps}), backend="numpy").tape(X)
source = numba_compiled.print_kernel(tape, np.float64, layout.sources_of([X], 4), tiled={tiled})
t = time.perf_counter()
cache.load(source, "bdk", np.float64, numba_compiled.compile_for)
print(len(tape.instrs), time.perf_counter() - t)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[125, 500, 2000])
    args = parser.parse_args(argv)
    lines = [measured_line("numba_compile_time.py", "float64, seconds."), "",
             "| tape instructions | scalar kernel | tiled kernel (SIMD across points) |",
             "|---|---|---|"]
    for steps in args.sizes:
        cells = []
        for tiled in (False, True):
            with tempfile.TemporaryDirectory() as cache_dir:
                env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache_dir)
                out = subprocess.run([sys.executable, "-c", CHILD.format(
                    here=HERE, steps=steps, tiled=tiled)], env=env, capture_output=True,
                    text=True, check=True)
                n, seconds = out.stdout.split()
                cells.append(f"{float(seconds):.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_result("numba_compile.md", lines)
    print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
