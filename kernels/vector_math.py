"""Elementary functions that vectorise, for the tiled kernels' loops over points.

A call to libm (``tanh``, ``sin``, ``cos``, as Numba spells ``np.tanh`` ...) is a scalar
call that keeps LLVM from vectorising the loop around it; SVML, Numba's vector library,
needs an SVML-patched LLVM that the pip build of llvmlite lacks. These are written in
plain arithmetic, branch-free, and inlined into the loops, so that each lane of a SIMD
register computes one point.

Numba inlines them (``inline="always"``), at a price in compile time
(``python benchmarks/numba_compile_time.py``). Plain ``@njit`` functions, left for LLVM
to inline when it links the module, compile faster, but LLVM leaves some of the calls in
the loops, which then stay scalar and run several times slower. Their accuracy is tested
against NumPy in ``tests/test_executors.py`` and measured, with their speed, by
``python benchmarks/tiled_math.py`` (``benchmarks/results/tiled_math.md``).
"""

from __future__ import annotations

import re

import numpy as np

from batchdiff.ops import OPS


# tanh for tiled float64 kernels, written so that LLVM vectorises it (libm's tanh is a
# call that keeps a loop scalar): Cephes' rational approximation below |x| = 0.625,
# else 1 - 2 / (exp(2|x|) + 1) with exp by Cody-Waite reduction, a degree-13 Taylor
# polynomial and 2^k built from k's bits. Within 2 ulp of NumPy's tanh (mean 0.19 ulp;
# libm's, as Numba calls it: 3 ulp, mean 0.33) over 3 million points, NaN, infinities
# and signed zeros as NumPy; 9x faster per call (benchmarks/tiled_math.py).
TANH = '''
@njit(**_inline)
def _tanh(x):
    a = abs(x)
    z = x * x
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3
    small = x + x * z * (p / q)
    t = 2.0 * a if 2.0 * a < 44.0 else 44.0
    k = np.floor(t * 1.4426950408889634 + 0.5)
    r = (t - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    e = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600 + r * (1.0 / 6227020800)))))))))))))
    i = int(k)
    e = e * ((2.0 if i & 1 else 1.0) * (4.0 if i & 2 else 1.0) * (16.0 if i & 4 else 1.0)
             * (256.0 if i & 8 else 1.0) * (65536.0 if i & 16 else 1.0)
             * (4294967296.0 if i & 32 else 1.0) * (18446744073709551616.0 if i & 64 else 1.0))
    big = 1.0 - 2.0 / (e + 1.0)
    y = small if a < 0.625 else (big if x > 0 else -big)
    return x if x != x or x == 0 else y
'''

# The same for float32 kernels, in float32 (16 lanes): Cephes' tanhf polynomial below
# 0.625, else 1 - 2 / (exp(2|x|) + 1) with Cephes' expf polynomial; 2|x| is capped at 20,
# where tanh is 1 in float32. Within 1.3 ulp of the exact tanh (libm's tanhf, as Numba
# calls it: 2.2 ulp), 16x faster per call (benchmarks/tiled_math.py).
TANHF = '''
_F0, _F1, _F2 = np.float32(0.0), np.float32(1.0), np.float32(2.0)


@njit(**_inline)
def _tanhf(x):
    a = abs(x)
    z = x * x
    small = x + x * z * ((((np.float32(-5.70498872745e-3) * z + np.float32(2.06390887954e-2)) * z
                           - np.float32(5.37397155531e-2)) * z + np.float32(1.33314422036e-1)) * z
                         - np.float32(3.33332819422e-1))
    t = _F2 * a if _F2 * a < np.float32(20.0) else np.float32(20.0)
    k = np.floor(t * np.float32(1.4426950408889634) + np.float32(0.5))
    r = (t - k * np.float32(0.693359375)) - k * np.float32(-2.12194440e-4)
    e = ((((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r
             + np.float32(8.3334519073e-3)) * r + np.float32(4.1665795894e-2)) * r
           + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)) * (r * r) + r + _F1)
    h = np.floor(k * np.float32(0.5))          # 2^k from k's five bits, in float32: an
    e = e * (_F1 + (k - _F2 * h))               # integer would make LLVM vectorise the
    k = np.floor(h * np.float32(0.5))           # loop at the integer's width, 8 lanes
    e = e * (_F1 + np.float32(3.0) * (h - _F2 * k))
    h = np.floor(k * np.float32(0.5))
    e = e * (_F1 + np.float32(15.0) * (k - _F2 * h))
    k = np.floor(h * np.float32(0.5))
    e = e * (_F1 + np.float32(255.0) * (h - _F2 * k))
    e = e * (_F1 + np.float32(65535.0) * k)
    big = _F1 - _F2 / (e + _F1)
    y = small if a < np.float32(0.625) else (big if x > _F0 else -big)
    return x if x != x or x == _F0 else y
'''


# sin and cos for |x| <= TRIG_MAX: x = n pi/2 + r by Cody-Waite reduction with pi/2 in
# four parts (fdlibm's: the first three of 33 bits, so n times each is exact for
# n < 2^20), then fdlibm's kernel polynomials for sin r and cos r on [-pi/4, pi/4], the
# quadrant n mod 4 picking one of them, without converting n to an integer (a NaN or
# infinite n would be undefined there). Within 2 ulp of NumPy's (mean 0.15 ulp), also
# at the doubles nearest multiples of pi/2 below TRIG_MAX; 14x faster per call. Beyond
# TRIG_MAX (and at infinities) the reduction would lose digits: the tiled kernel flags
# the tile and recomputes it with libm (``numba_printers.TiledPrinter``).
TRIG_MAX = 262144.0

TRIG = f"\nTRIG_MAX = {TRIG_MAX!r}\n" + '''

@njit(**_inline)
def _sincos(x):
    n = np.floor(x * 6.36619772367581382433e-01 + 0.5)
    r = (((x - n * 1.57079632673412561417e+00) - n * 6.07710050630396597660e-11)
         - n * 2.02226624871116645580e-21) - n * 8.47842766036889956997e-32
    z = r * r
    s = r + z * r * (-1.66666666666666324348e-01 + z * (8.33333333332248946124e-03 + z * (
        -1.98412698298579493134e-04 + z * (2.75573137070700676789e-06 + z * (
            -2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))))
    hz = 0.5 * z
    c0 = 1.0 - hz
    c = c0 + (((1.0 - c0) - hz) + z * z * (4.16666666666666019037e-02 + z * (
        -1.38888888888741095749e-03 + z * (2.48015872894767294178e-05 + z * (
            -2.75573143513906633035e-07 + z * (2.08757232129817482790e-09
                                               - z * 1.13596475577881948265e-11))))))
    return s, c, n - 4.0 * np.floor(n * 0.25)

'''

# The same for float32 kernels, in float32 alone (a float64 value in the loop would halve
# its lanes): pi/2 in four parts, the first three of 12 bits, so n times each is exact for
# |x| <= TRIG_MAX_F; Cephes' sinf and cosf polynomials. Within 2.4 ulp of the exact sin and
# cos (libm's sinf: 0.6; with the reduction in float64, 1.5 ulp but half the lanes: the sin
# chain's float32 gradient took 18 ms against 13), 23x faster per call.
TRIG_MAX_F = 4096.0
TRIGF = f"\nTRIG_MAX = np.float32({TRIG_MAX_F!r})\n" + '''

@njit(**_inline)
def _sincosf(x):
    n = np.floor(x * np.float32(0.636619772367581) + np.float32(0.5))
    r = (((x - n * np.float32(1.57080078125)) - n * np.float32(-4.453584551811218e-06))
         - n * np.float32(-8.706138032721356e-10)) - n * np.float32(6.223371969669989e-14)
    z = r * r
    s = r + z * r * ((np.float32(-1.9515295891e-4) * z + np.float32(8.3321608736e-3)) * z
                     - np.float32(1.6666654611e-1))
    c = ((np.float32(2.443315711809948e-5) * z - np.float32(1.388731625493765e-3)) * z
         + np.float32(4.166664568298827e-2)) * z * z - np.float32(0.5) * z + np.float32(1.0)
    return s, c, n - np.float32(4.0) * np.floor(n * np.float32(0.25))
'''

# sin and cos from _sincos{f}'s parts: the quadrant n mod 4 picks one
_SELECT = """
@njit(**_inline)
def _sin{f}(x):
    s, c, q = _sincos{f}(x)
    y = s if q == 0 else (c if q == 1 else (-s if q == 2 else -c))
    return x if x == 0 else y


@njit(**_inline)
def _cos{f}(x):
    s, c, q = _sincos{f}(x)
    return c if q == 0 else (-s if q == 1 else (-c if q == 2 else s))
"""
TRIG += _SELECT.format(f="")
TRIGF += _SELECT.format(f="f")



def _frozen(source: str, prefix: str) -> str:
    """``source`` with each distinct ``np.float32(c)`` made a module global ``{prefix}k``,
    assigned before the functions: Numba freezes a global, so the machine code is the
    same, but it types a use of a global about as fast as arithmetic and a call of
    ``np.float32`` several times slower, again at every inlined call site.

    >>> print(_frozen("y = x * np.float32(0.5) + np.float32(0.5)", "_h"), end="")
    _h0 = np.float32(0.5)
    y = x * _h0 + _h0
    """
    names = {}

    def name(match):
        return names.setdefault(match.group(0), f"{prefix}{len(names)}")

    body = re.sub(r"np\.float32\([-+0-9.e]+\)", name, source)
    return "".join(f"{n} = {text}\n" for text, n in names.items()) + body


TANHF = _frozen(TANHF, "_ft")
TRIGF = _frozen(TRIGF, "_fs")

# Each source and the functions it defines (as ``ops.Op.vector`` names them), in the order
# a kernel's module holds them: a kernel gets a source when one of its ops names one of
# its functions
SOURCES = ((TANH, TANHF, ("_tanh{f}",)),
           (TRIG, TRIGF, ("_sin{f}", "_cos{f}")))


def function(op, dtype) -> str | None:
    """The name of ``op``'s own function (``ops.Op.vector``) in a tiled kernel of
    ``dtype``, or None.

    >>> from batchdiff.ops import OPS
    >>> function(OPS["tanh"], np.float32), function(OPS["exp"], np.float64)
    ('_tanhf', None)
    """
    if op.vector is None:
        return None
    return op.vector.format(f="f" if np.dtype(dtype) == np.float32 else "")


# name in the kernels, by op and dtype
FUNCTIONS = {(name, dtype): function(op, dtype) for name, op in OPS.items() if op.vector
             for dtype in ("float64", "float32")}


def vector_math(ops, dtype) -> list:
    """The sources a tiled kernel of ``dtype`` using ``ops`` (names) needs (only those: a
    change to one leaves the other kernels' cache entries valid)."""
    single = np.dtype(dtype) == np.float32
    wanted = {OPS[op].vector for op in ops if op in OPS}
    return [single_source if single else source
            for source, single_source, names in SOURCES if wanted & set(names)]


def trig_max(dtype) -> float:
    """Up to which |x| a tiled kernel of ``dtype`` uses its own sin and cos."""
    return TRIG_MAX_F if np.dtype(dtype) == np.float32 else TRIG_MAX
