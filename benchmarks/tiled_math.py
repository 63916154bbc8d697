"""The tiled kernels' own tanh, sin and cos (``kernels/vector_math.py``) against libm's.

    python benchmarks/tiled_math.py

Compiles a loop over 3 million points calling each, in a fresh Numba module, in float64
and in float32, and reports nanoseconds per call (fastest of 10 runs) and the error
against NumPy's float64 function in units in the last place of the dtype (in float32
that is the exact value). The points: uniform on [-1, 1] and [-25, 25], normal with
sigma 1e-3, and for sin and cos uniform on [-L, L], L the limit of their argument
(``vector_math.trig_max``: beyond it a tiled kernel redoes the tile with libm). Writes ``benchmarks/results/tiled_math.md``.
"""
import os
import sys

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from batchdiff.kernels import vector_math  # noqa: E402
from problems import fastest, measured_line, write_result  # noqa: E402

LOOP = '''
@njit(**_opts)
def {name}(x, out):
    for l in range(x.shape[0]):
        out[l] = {call}(x[l])
'''


def loops(dtype):
    """``{label: compiled loop}``: libm's and ours, for each function."""
    ops = ("tanh", "sin", "cos")
    source = "".join(vector_math.vector_math(ops, dtype))
    calls = {}
    for op in ops:
        calls[f"{op} libm"] = f"np.{op}"
        calls[f"{op} ours"] = vector_math.FUNCTIONS[op, np.dtype(dtype).name]
    source += "".join(LOOP.format(name=f"loop{i}", call=c) for i, c in enumerate(calls.values()))
    namespace = {"njit": njit, "np": np}
    exec("_opts = dict(error_model='numpy', nogil=True)\n_inline = dict(_opts, inline='always')\n"
         + source, namespace)
    return {label: namespace[f"loop{i}"] for i, label in enumerate(calls)}


def main():
    rng = np.random.default_rng(0)
    small = np.concatenate([rng.uniform(-1, 1, 10**6), rng.uniform(-25, 25, 10**6),
                            rng.standard_normal(10**6) * 1e-3])
    wide = np.concatenate([small[:2 * 10**6], rng.uniform(-1, 1, 10**6)])
    what = (f"{len(small):,} points: uniform on [-1, 1] and "
            "[-25, 25], and normal with sigma 1e-3 (tanh) or uniform on [-L, L] (sin, cos; "
            f"L = TRIG_MAX = {vector_math.TRIG_MAX:g} in float64, TRIG_MAX_F = "
            f"{vector_math.TRIG_MAX_F:g} in float32). "
            "Errors against NumPy's float64 function (in float32 ulp, that is the exact "
            "value).")
    lines = [measured_line("tiled_math.py", what), "",
             "| dtype | function | ns per call | max error (ulp) | mean error (ulp) |",
             "|---|---|---|---|---|"]
    for dtype in (np.float64, np.float32):
        for label, fn in loops(dtype).items():
            op = label.split()[0]
            x = small if op == "tanh" else wide * np.where(
                np.arange(wide.size) < 2 * 10**6, 1.0, vector_math.trig_max(dtype))
            x = x.astype(dtype)
            exact = getattr(np, op)(x.astype(np.float64))
            out = np.empty_like(x)
            fn(x[:10], out[:10])
            best = fastest(fn, x, out, repeats=10, warmup=False)
            spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
            ulp = np.where(out == exact.astype(dtype), 0.0, np.abs(out - exact) / spacing)
            lines.append(f"| {np.dtype(dtype).name} | {label} | {best / len(x) * 1e9:.2f} | "
                         f"{ulp.max():.1f} | {ulp.mean():.2f} |")
            print(lines[-1], flush=True)
    write_result("tiled_math.md", lines)


if __name__ == "__main__":
    main()
