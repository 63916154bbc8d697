"""Compile time of generated Numba kernels against tape length, scalar and tiled.

    python benchmarks/numba_compile_time.py [--sizes 125 500 2000] [--dtype float32]
    python benchmarks/numba_compile_time.py --problem "tanh MLP 8-16-16-1" --dtype float32

For gradient tapes of chains ``t = sin(t) * x[k % 8] + 0.5`` (8 instructions a step;
``--step relu``: ``t = max(t, 0.1 t) * x[k % 8] + 0.5``, whose tapes hold ``max`` and
``where``),
it prints the kernel both ways (``numba_compiled.print_kernel(..., tiled=False/True)``)
and times writing, importing and compiling it for float64 (or ``--dtype``) into an empty
kernel cache (a temporary ``BATCHDIFF_CACHE_DIR``), each in a fresh process. The table
goes to ``benchmarks/results/numba_compile.md`` (``numba_compile_relu.md`` with ``--step
relu``, ``numba_compile_float32.md`` with ``--dtype float32``). ``--problem NAME`` times
instead the kernel of a problem of ``problems.py``, as ``method="compiled"`` prints it
(tiled or not), ``--repeat`` times, and writes no file.
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
import problems
dtype = np.{dtype}
if {problem!r}:
    p = problems.problem({problem!r})
    X = p.points(4, np.random.default_rng(0), dtype)
    tape = getattr(bd, p.transform)(p.fn, backend="numpy").tape(X)
    tiled = numba_compiled.is_tiled(tape)
else:
    X = np.ones((4, 8), dtype)
    tape = bd.grad(chain({steps}, step={step}), backend="numpy").tape(X)
    tiled = {tiled}
source = numba_compiled.print_kernel(tape, dtype, layout.sources_of([X], 4), tiled=tiled)
t = time.perf_counter()
cache.load(source, "bdk", dtype, numba_compiled.compile_for)
print(len(tape.instrs), time.perf_counter() - t, tiled)
"""


def compile_seconds(dtype, steps=0, tiled=False, step="np.sin", problem=""):
    """``(tape instructions, seconds, tiled)`` of one compile into an empty cache, in a
    fresh process."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache_dir)
        out = subprocess.run([sys.executable, "-c", CHILD.format(
            here=HERE, steps=steps, tiled=tiled, step=step, dtype=dtype, problem=problem)],
            env=env, capture_output=True, text=True, check=True)
    n, seconds, tiled = out.stdout.split()
    return int(n), float(seconds), tiled == "True"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[125, 500, 2000])
    parser.add_argument("--step", choices=("sin", "relu"), default="sin",
                        help="the chain's step: np.sin or a leaky ReLU (max and where)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--problem", help="a problem of problems.py instead of the chains")
    parser.add_argument("--repeat", type=int, default=3, help="compiles of --problem")
    args = parser.parse_args(argv)
    if args.problem:
        for _ in range(args.repeat):
            n, seconds, tiled = compile_seconds(args.dtype, problem=args.problem)
            print(f"{args.problem}, {args.dtype}, {n} instructions, "
                  f"{'tiled' if tiled else 'scalar'}: {seconds:.2f} s", flush=True)
        return 0
    step, name = (("np.sin", "numba_compile.md") if args.step == "sin"
                  else ("relu_step", "numba_compile_relu.md"))
    if args.dtype != "float64":
        name = name.replace(".md", f"_{args.dtype}.md")
    flags = "" if args.dtype == "float64" else f" --dtype {args.dtype}"
    lines = [measured_line("numba_compile_time.py" + flags,
                           f"{args.dtype}, seconds, step {args.step}."), "",
             "| tape instructions | scalar kernel | tiled kernel (SIMD across points) |",
             "|---|---|---|"]
    for steps in args.sizes:
        cells = []
        for tiled in (False, True):
            n, seconds, _ = compile_seconds(args.dtype, steps, tiled, step)
            cells.append(f"{seconds:.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    write_result(name, lines)
    print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
