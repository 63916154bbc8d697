"""The tiled kernels' own tanh (``numba_compiled._TANH``, ``_TANHF``) against libm's, per call.

    python benchmarks/tiled_tanh.py

Compiles a loop over 3 million points calling each, in a fresh Numba module, in float64
and in float32, and reports nanoseconds per call (fastest of 10 runs) and the error
against NumPy's float64 tanh in units in the last place of the dtype (in float32 that is
the exact tanh). Writes ``benchmarks/results/tiled_tanh.md``.
"""
import os
import time

import numpy as np
from numba import njit

from batchdiff.kernels import numba_compiled

LOOPS = '''
@njit(**_opts)
def ours64(x, out):
    for l in range(x.shape[0]):
        out[l] = _tanh(x[l])


@njit(**_opts)
def ours32(x, out):
    for l in range(x.shape[0]):
        out[l] = _tanhf(x[l])


@njit(**_opts)
def libm(x, out):
    for l in range(x.shape[0]):
        out[l] = np.tanh(x[l])
'''


def main():
    namespace = {"njit": njit, "np": np}
    exec("_opts = dict(error_model='numpy', nogil=True)\n_inline = dict(_opts, inline='always')"
         + numba_compiled._TANH + numba_compiled._TANHF + LOOPS, namespace)
    rng = np.random.default_rng(0)
    x64 = np.concatenate([rng.uniform(-1, 1, 10**6), rng.uniform(-25, 25, 10**6),
                          rng.standard_normal(10**6) * 1e-3])
    lines = [f"Measured with `python benchmarks/tiled_tanh.py` on {time.strftime('%Y-%m-%d')} "
             f"({os.cpu_count()} cores), {len(x64):,} points: uniform on [-1, 1] and "
             "[-25, 25], normal with sigma 1e-3. Errors against NumPy's float64 tanh (in "
             "float32 ulp, that is the exact tanh).", "",
             "| dtype | tanh | ns per call | max error (ulp) | mean error (ulp) |",
             "|---|---|---|---|---|"]
    for dtype, ours in ((np.float64, "ours64"), (np.float32, "ours32")):
        x = x64.astype(dtype)
        exact = np.tanh(x.astype(np.float64))
        out = np.empty_like(x)
        for name in ("libm", ours):
            fn = namespace[name]
            fn(x[:10], out[:10])
            best = float("inf")
            for _ in range(10):
                t = time.perf_counter()
                fn(x, out)
                best = min(best, time.perf_counter() - t)
            spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
            ulp = np.abs(out - exact) / spacing
            lines.append(f"| {np.dtype(dtype).name} | {name.rstrip('0123456789')} | "
                         f"{best / len(x) * 1e9:.2f} | {ulp.max():.1f} | {ulp.mean():.2f} |")
            print(lines[-1], flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tiled_tanh.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
