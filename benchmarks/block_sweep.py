"""The block level against width: tanh MLPs ``3-w-...-w-1`` from w = 8 to 256.

    python benchmarks/block_sweep.py                       # widths 8 16 32 64 128 256
    python benchmarks/block_sweep.py --widths 64 --layers 3 --points 100000

For each width and for the gradient and the input Hessian: the tape's size with blocks
and unrolled (``block_trace``'s thresholds beyond every matrix), trace and AD time, the
compiled kernel's compile time (in a fresh process with an empty kernel cache), and the
time per point of the NumPy reference interpreter, replay, the compiled kernel and
``method="auto"`` once settled, beside JAX ``jit(vmap(...))`` on the same function in
the same process (when JAX is installed), each the fastest of several calls taking
turns. The weights are fixed (``batchdiff.problems.tanh_mlp``). The table goes to
``benchmarks/results/block_sweep.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BATCHDIFF_BACKGROUND_COMPILE", "0")

import batchdiff as bd  # noqa: E402
from batchdiff import block_trace  # noqa: E402
from batchdiff.problems import tanh_mlp  # noqa: E402
from problems import fastest_interleaved, measured_line, table_head, write_result  # noqa: E402

UNROLLED_MAX_WIDTH = 64     # wider unrolled tapes take minutes and gigabytes to trace
COMPILE = """
import os, sys, time
import numpy as np, batchdiff as bd
from batchdiff.kernels import layout, numba_compiled
from batchdiff.problems import tanh_mlp
f = tanh_mlp({width}, {layers})

g = bd.{kind}(f)
tape = g._program(((3,),), np.float64).executable
sources = tuple(layout.sources_of([np.zeros((2, 3))], 2))
start = time.perf_counter()
numba_compiled.kernel_module(tape, np.float64, sources, (len(tape.outputs),))
print(time.perf_counter() - start)
"""


def compile_seconds(width, layers, kind) -> float:
    """The compiled kernel's compile time, in a fresh process with an empty kernel cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache)
        done = subprocess.run([sys.executable, "-c", COMPILE.format(
            width=width, layers=layers, kind=kind)], env=env, capture_output=True, text=True,
            check=True)
    return float(done.stdout.split()[-1])


def jax_call(width, layers, kind, X):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    f = tanh_mlp(width, layers, xp=jnp)
    transform = jax.grad(f) if kind == "grad" else jax.hessian(f)
    fn = jax.jit(jax.vmap(transform))
    Xj = jnp.asarray(X)
    return lambda: fn(Xj).block_until_ready()


def row(width, layers, kind, points, rng) -> list:
    f = tanh_mlp(width, layers)
    X = rng.uniform(-1.0, 1.0, (points, 3))
    start = time.perf_counter()
    tape = getattr(bd, kind)(f).tape(X[:1])
    traced = time.perf_counter() - start
    unrolled = traced_unrolled = None
    if width <= UNROLLED_MAX_WIDTH:
        old = block_trace.LINEAR_MIN, block_trace.LINEAR_MIN_ROWS
        block_trace.LINEAR_MIN = block_trace.LINEAR_MIN_ROWS = 10 ** 9
        try:
            start = time.perf_counter()
            unrolled = getattr(bd, kind)(f).tape(X[:1]).num_ops
            traced_unrolled = time.perf_counter() - start
        finally:
            block_trace.LINEAR_MIN, block_trace.LINEAR_MIN_ROWS = old
    compile_s = compile_seconds(width, layers, kind)
    calls = {m: (lambda g: (lambda: g(X)))(getattr(bd, kind)(f, method=m) if m != "numpy"
                                              else getattr(bd, kind)(f, backend="numpy"))
             for m in ("numpy", "replay", "compiled", "auto")}
    auto = calls["auto"]
    for _ in range(8):                    # settle: compiled, raced
        auto()
    bd.kernels.warmup.wait()
    ref = calls["numpy"]()
    for name, call in calls.items():
        np.testing.assert_allclose(call(), ref, rtol=1e-10, atol=1e-10, err_msg=name)
    jax_fn = jax_call(width, layers, kind, X)
    if jax_fn is not None:
        np.testing.assert_allclose(np.asarray(jax_fn()), ref, rtol=1e-10, atol=1e-10)
        calls["JAX"] = jax_fn
    times = dict(zip(calls, fastest_interleaved(list(calls.values()), repeats=5)))
    per_point = {k: v / points * 1e9 for k, v in times.items()}
    jax_ns = per_point.get("JAX")
    ratio = f"{jax_ns / per_point['auto']:.2f}x" if jax_ns else "-"
    return [f"3-{'-'.join([str(width)] * layers)}-1", kind, f"{tape.num_ops:,}",
            f"{unrolled:,}" if unrolled else "-", f"{traced:.3f}",
            f"{traced_unrolled:.2f}" if unrolled else "-", f"{compile_s:.1f}",
            *(f"{per_point[m]:.0f}" for m in ("numpy", "replay", "compiled", "auto")),
            f"{jax_ns:.0f}" if jax_ns else "-", ratio]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--layers", type=int, default=None,
                        help="hidden layers (default: 3 up to width 64, 2 beyond)")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--kinds", nargs="+", default=["grad", "hessian"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [measured_line("block_sweep.py", f"B = {args.points:,} points, float64, "
                           "ns per point (fastest of 5 calls taking turns)"), "",
             *table_head("network", "transform", "tape ops", "unrolled ops", "trace+AD s",
                         "unrolled trace+AD s", "compile s", "NumPy ns", "replay ns",
                         "compiled ns", "auto ns", "JAX ns", "JAX / auto")]
    for width in args.widths:
        layers = args.layers or (3 if width <= 64 else 2)
        for kind in args.kinds:
            cells = row(width, layers, kind, args.points, rng)
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Python {platform.python_version()}, NumPy {np.__version__}, "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})."]
    print(write_result("block_sweep.md", lines))


if __name__ == "__main__":
    main()
