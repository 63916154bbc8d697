"""The one list of primitive scalar ops.

Every op the tape can hold is one ``Op`` entry below: its value rule (a NumPy
function, which is also how the reference interpreter and constant folding run it),
its local partial derivatives (written with ``Var`` arithmetic, so they build graph
nodes), and its spelling for the two code-generation targets. Forward mode, reverse
mode and Hessians are all derived from these partials; nothing else in the package
knows an op's calculus. Adding an op means adding one entry here (and, if NumPy
users should reach it, one line in ``ufuncs.UFUNCS``); ``tests/test_ops.py`` fails
for an entry with anything missing.

Spellings are format strings over the argument expressions ``{0}``, ``{1}``, ``{2}``:
``py`` is Python/Numba source (``np`` is NumPy, ``{T}`` the NumPy scalar type, e.g.
``np.float32``), ``c`` is CUDA C where ``{f}`` is the float32 suffix of a math function
(``sin{f}`` -> ``sinf``) and ``{T}`` the C type. Every spelling gives the value rule's
result bit for bit where the math library allows: max, min and clip are written out as
comparisons: Numba's scalar ``np.maximum`` returns the other zero at a ``-0.0``/``0.0``
tie, C's ``fmax`` may return either, and ``fmax`` drops NaN, where NumPy propagates it.

At a kink an op's partials are a deliberate choice (``docs/writing-functions.md``,
"Conventions at kinks"): the minimum-norm subgradient of abs, max, min and hypot
(abs'(0) = 0, a max/min tie splits 1/2 and 1/2, hypot'(0, 0) = (0, 0)), and x itself on
clip's closed interval (the value there is x, so the derivative is 1).

The remaining fields are facts the code generators read, each set by keyword in the op's
entry and described where ``Op`` declares it: whether Numba prints the op as a call of a
helper function (``branches``), whether it compares its arguments (``comparison``,
``compares``), the tiled kernels' own vectorisable function for it (``vector``,
``reduced_range``, ``compile_weight``) and its place in the replay interpreter
(``replay_rank``). ``tests/test_ops.py`` checks them against each other and against the
modules that read them.

Derived operations (``square``, ``reciprocal``, ``log10`` ...) are written in terms of
these primitives in ``ufuncs.py`` and add no rules.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    value: Callable              # NumPy implementation, elementwise on arrays or scalars
    partials: Callable | None    # (*args, out) -> tuple of Var|None, one per argument
    py: str                      # Python / Numba spelling
    c: str                       # CUDA C spelling
    commutative: bool = False
    # Numba kernels call a helper function ``_{name}`` defined once per module, its body
    # the py spelling (kernels/numba_printers.py): the spelling branches (a conditional
    # expression), which Numba types far more slowly than arithmetic
    branches: bool = False
    # a comparison, valued 1.0 or 0.0: peephole.py folds ne(comparison, 0) to it
    comparison: bool = False
    # compares its arguments: a constant argument is hidden from the compiler (read at run
    # time), which folds some comparisons of literal constants wrongly (kernels/plan.py)
    compares: bool = False
    # the tiled Numba kernels' own branch-free function for the op (kernels/vector_math.py),
    # ``{f}`` the float32 suffix as in ``c``: libm's function is a call that keeps a loop
    # over points from vectorising; the replay interpreter uses the float64 one
    vector: str | None = None
    # the vector_math global bounding |argument| where ``vector`` holds (its argument
    # reduction loses digits beyond): a tile or block with a larger one is computed again
    # with libm's function (numba_printers.TiledPrinter, numba_replay)
    reduced_range: str | None = None
    # instructions the op's statement compiles like in a tiled Numba kernel
    # (numba_compiled.compile_seconds): an inlined ``vector`` function is itself and about
    # 28 more (benchmarks/results/numba_compile.md)
    compile_weight: int = 1
    # place in the replay interpreter's chain of branches, walked per instruction
    # (numba_replay.OPCODES): the most frequent ops first; None: after them, in table order
    replay_rank: int | None = None


def _call(name, *args):
    """Build node ``name(*args)`` in the graph of the first Var among ``args``."""
    for a in args:
        if hasattr(a, "graph"):
            return a.graph.apply(name, args)
    raise TypeError(f"_call({name}) needs a traced argument")


def _cmp(ufunc):
    def value(a, b):
        return ufunc(a, b).astype(np.result_type(a, b))
    return value


def _where(c, a, b):
    return np.where(c != 0, a, b)


def _select(c, a, b):
    """Partial of where(c, a, b) with respect to a (1 where c holds) or b (swap a, b)."""
    return _call("where", c, a, b)


OPS: dict[str, Op] = {}
_ERF_SCALE = 2.0 / math.sqrt(math.pi)


def _op(name, arity, value, partials, py, c, commutative=False, **facts):
    OPS[name] = Op(name, arity, value, partials, py, c, commutative, **facts)


# --- arithmetic ----------------------------------------------------------------------
_op("add", 2, np.add, lambda a, b, y: (1.0, 1.0), "({0} + {1})", "({0} + {1})", True,
    replay_rank=1)
_op("sub", 2, np.subtract, lambda a, b, y: (1.0, -1.0), "({0} - {1})", "({0} - {1})",
    replay_rank=2)
_op("mul", 2, np.multiply, lambda a, b, y: (b, a), "({0} * {1})", "({0} * {1})", True,
    replay_rank=0)
_op("div", 2, np.divide, lambda a, b, y: (1.0 / b, -y / b), "({0} / {1})", "({0} / {1})",
    replay_rank=4)
_op("neg", 1, np.negative, lambda a, y: (-1.0,), "(-{0})", "(-{0})", replay_rank=3)
# d/db a**b = a**b log(a), taken as 0 where a == 0 (a**b is constant 0 there for b > 0);
# log sees 1 there, so derivatives of this partial stay finite too (the "double where")
_op("pow", 2, np.power,
    lambda a, b, y: (b * a ** (b - 1.0),
                     _select(a == 0.0, 0.0, y * _call("log", _select(a == 0.0, 1.0, a)))),
    "({0} ** {1})", "pow{f}({0}, {1})")

# --- powers, exponentials, logarithms ------------------------------------------------
_op("sqrt", 1, np.sqrt, lambda a, y: (0.5 / y,), "np.sqrt({0})", "sqrt{f}({0})")
_op("exp", 1, np.exp, lambda a, y: (y,), "np.exp({0})", "exp{f}({0})")
_op("log", 1, np.log, lambda a, y: (1.0 / a,), "np.log({0})", "log{f}({0})")
_op("log1p", 1, np.log1p, lambda a, y: (1.0 / (1.0 + a),), "np.log1p({0})", "log1p{f}({0})")
_op("expm1", 1, np.expm1, lambda a, y: (y + 1.0,), "np.expm1({0})", "expm1{f}({0})")
_op("cbrt", 1, np.cbrt, lambda a, y: (1.0 / (3.0 * y * y),), "np.cbrt({0})", "cbrt{f}({0})")

# --- special functions: the C library's erf, erfc and lgamma (NumPy has none). The value
# rule is a NumPy ufunc compiled by Numba from the same math-module call the kernels make,
# so the reference interpreter and the kernels call one C function (Python's own
# math.lgamma loses thousands of ulp near 1 and 2). lgamma's derivative, digamma, is
# written in primitive ops (``special.digamma``), and so are its own derivatives.
_LIBM: dict = {}


def _libm(name):
    """``math.<name>`` as a NumPy ufunc for float32 and float64, compiled on first use."""
    def value(a):
        if name not in _LIBM:
            import numba
            fn = getattr(math, name)
            _LIBM[name] = numba.vectorize(["float64(float64)", "float32(float32)"],
                                          cache=True)(lambda v: fn(v))
        a = np.asarray(a)
        if a.dtype in (np.float32, np.float64):
            return _LIBM[name](a)[()]
        kind = a.dtype if a.dtype.kind == "f" else np.float64   # long double: in float64
        return _LIBM[name](a.astype(np.float64)).astype(kind)[()]
    return value


def _digamma(a):
    from .special import digamma
    return digamma(a)


_op("erf", 1, _libm("erf"),
    lambda a, y: (_ERF_SCALE * _call("exp", -(a * a)),), "{T}(math.erf({0}))", "erf{f}({0})")
_op("erfc", 1, _libm("erfc"),
    lambda a, y: (-_ERF_SCALE * _call("exp", -(a * a)),), "{T}(math.erfc({0}))", "erfc{f}({0})")
_op("lgamma", 1, _libm("lgamma"), lambda a, y: (_digamma(a),),
    "{T}(math.lgamma({0}))", "lgamma{f}({0})")

# --- trigonometric and hyperbolic ------------------------------------------------------
_op("sin", 1, np.sin, lambda a, y: (_call("cos", a),), "np.sin({0})", "sin{f}({0})",
    vector="_sin{f}", reduced_range="TRIG_MAX", compile_weight=29)
_op("cos", 1, np.cos, lambda a, y: (-_call("sin", a),), "np.cos({0})", "cos{f}({0})",
    vector="_cos{f}", reduced_range="TRIG_MAX", compile_weight=29)
_op("tan", 1, np.tan, lambda a, y: (1.0 + y * y,), "np.tan({0})", "tan{f}({0})")
_op("asin", 1, np.arcsin, lambda a, y: (1.0 / _call("sqrt", 1.0 - a * a),),
    "np.arcsin({0})", "asin{f}({0})")
_op("acos", 1, np.arccos, lambda a, y: (-1.0 / _call("sqrt", 1.0 - a * a),),
    "np.arccos({0})", "acos{f}({0})")
_op("atan", 1, np.arctan, lambda a, y: (1.0 / (1.0 + a * a),), "np.arctan({0})", "atan{f}({0})")
_op("atan2", 2, np.arctan2,
    lambda a, b, y: (b / (a * a + b * b), -a / (a * a + b * b)),
    "np.arctan2({0}, {1})", "atan2{f}({0}, {1})")
_op("sinh", 1, np.sinh, lambda a, y: (_call("cosh", a),), "np.sinh({0})", "sinh{f}({0})")
_op("cosh", 1, np.cosh, lambda a, y: (_call("sinh", a),), "np.cosh({0})", "cosh{f}({0})")
_op("tanh", 1, np.tanh, lambda a, y: (1.0 - y * y,), "np.tanh({0})", "tanh{f}({0})",
    vector="_tanh{f}", compile_weight=29)
# at (0, 0) the partials a/y, b/y are 0/0: dividing by inf there instead gives (0, 0),
# and their own derivatives stay 0 (finite), as abs'(0) = 0 and abs''(0) = 0
_op("asinh", 1, np.arcsinh, lambda a, y: (1.0 / _call("sqrt", a * a + 1.0),),
    "np.arcsinh({0})", "asinh{f}({0})")
_op("acosh", 1, np.arccosh, lambda a, y: (1.0 / _call("sqrt", (a - 1.0) * (a + 1.0)),),
    "np.arccosh({0})", "acosh{f}({0})")
_op("atanh", 1, np.arctanh, lambda a, y: (1.0 / ((1.0 - a) * (1.0 + a)),),
    "np.arctanh({0})", "atanh{f}({0})")
_op("hypot", 2, np.hypot,
    lambda a, b, y: (a / _select(y == 0.0, np.inf, y), b / _select(y == 0.0, np.inf, y)),
    "np.hypot({0}, {1})", "hypot{f}({0}, {1})", True)

# --- piecewise ----------------------------------------------------------------------
# abs'(0) = sign(0) = 0. A max/min tie splits the derivative evenly, so the argument order
# does not matter and max(a, b) = (a + b + |a - b|) / 2 holds for derivatives too.
# clip keeps x on the closed interval [lo, hi] (np.clip with scalar bounds: NumPy's
# array-bound loop returns the bound at a signed-zero tie instead), so d clip/dx = 1 there.
def _tie_split(wins, tie):
    """Partials of max or min: 1 to the argument that ``wins``, 1/2 to each at a ``tie``."""
    first = _select(tie, 0.5, wins)          # a comparison is 1.0 or 0.0
    return first, 1.0 - first


def _clip(x, lo, hi):
    """``np.clip(x, lo, hi)`` as NumPy computes it for scalar bounds, for any operands.

    x itself on the closed interval [lo, hi] and where x is NaN; else the bound it
    passed (NaN if that bound is NaN; ``hi`` if lo > hi).
    """
    nan = x != x
    return np.where((x >= lo) | nan, np.where((x <= hi) | nan, x, hi),
                    np.where((lo <= hi) | (lo != lo), lo, hi))


def _clip_partials(x, lo, hi):
    """d clip / d(x, lo, hi): 1 to whichever of them the value is."""
    below, above, crossed = x < lo, x > hi, lo > hi
    return (_select(below, 0.0, _select(above, 0.0, 1.0)),
            _select(below, _select(crossed, 0.0, 1.0), 0.0),
            _select(below, _select(crossed, 1.0, 0.0), _select(above, 1.0, 0.0)))


_op("abs", 1, np.abs, lambda a, y: (_call("sign", a),), "abs({0})", "fabs{f}({0})")
_op("sign", 1, np.sign, lambda a, y: (None,),
    "({T}(1) if {0} > 0 else ({T}(-1) if {0} < 0 else {0} + {T}(0)))",
    "(({0}) > 0 ? ({T})1 : (({0}) < 0 ? ({T})-1 : ({0}) + ({T})0))", branches=True)
_op("max", 2, np.maximum, lambda a, b, y: _tie_split(a > b, a == b),
    "({0} if {0} > {1} or {0} != {0} else {1})",
    "((({0}) > ({1}) || ({0}) != ({0})) ? ({0}) : ({1}))", branches=True, compares=True)
_op("min", 2, np.minimum, lambda a, b, y: _tie_split(a < b, a == b),
    "({0} if {0} < {1} or {0} != {0} else {1})",
    "((({0}) < ({1}) || ({0}) != ({0})) ? ({0}) : ({1}))", branches=True, compares=True)
_op("clip", 3, _clip, lambda x, lo, hi, y: _clip_partials(x, lo, hi),
    "(({0} if {0} <= {2} or {0} != {0} else {2}) if {0} >= {1} or {0} != {0}"
    " else ({1} if {1} <= {2} or {1} != {1} else {2}))",
    "((({0}) >= ({1}) || ({0}) != ({0})) ? ((({0}) <= ({2}) || ({0}) != ({0})) ? ({0}) : ({2}))"
    " : ((({1}) <= ({2}) || ({1}) != ({1})) ? ({1}) : ({2})))", branches=True, compares=True)
_op("where", 3, _where,
    lambda c, a, b, y: (None, _select(c, 1.0, 0.0), _select(c, 0.0, 1.0)),
    "({1} if {0} != 0 else {2})", "(({0}) != 0 ? ({1}) : ({2}))", branches=True, replay_rank=5)

# --- rounding: integer-valued steps, derivative zero (as NumPy's and JAX's) -------------
# fmod(a, b) = a - trunc(a / b) b exactly (C's fmod, which NumPy calls), so its partials
# are those of that expression with the quotient held, as between the steps of trunc.
_op("floor", 1, np.floor, lambda a, y: (None,), "np.floor({0})", "floor{f}({0})")
_op("ceil", 1, np.ceil, lambda a, y: (None,), "np.ceil({0})", "ceil{f}({0})")
_op("trunc", 1, np.trunc, lambda a, y: (None,), "np.trunc({0})", "trunc{f}({0})")
_op("rint", 1, np.rint, lambda a, y: (None,), "np.rint({0})", "rint{f}({0})")
_op("fmod", 2, np.fmod, lambda a, b, y: (1.0, -_call("trunc", a / b)),
    "np.fmod({0}, {1})", "fmod{f}({0}, {1})")

# --- comparisons: 1.0 or 0.0, derivative zero ------------------------------------------
_op("lt", 2, _cmp(np.less), lambda a, b, y: (None, None), "{T}({0} < {1})", "({T})({0} < {1})",
    comparison=True, compares=True)
_op("le", 2, _cmp(np.less_equal), lambda a, b, y: (None, None),
    "{T}({0} <= {1})", "({T})({0} <= {1})", comparison=True, compares=True)
_op("gt", 2, _cmp(np.greater), lambda a, b, y: (None, None), "{T}({0} > {1})", "({T})({0} > {1})",
    comparison=True, compares=True)
_op("ge", 2, _cmp(np.greater_equal), lambda a, b, y: (None, None),
    "{T}({0} >= {1})", "({T})({0} >= {1})", comparison=True, compares=True)
_op("eq", 2, _cmp(np.equal), lambda a, b, y: (None, None),
    "{T}({0} == {1})", "({T})({0} == {1})", True, comparison=True, compares=True)
_op("ne", 2, _cmp(np.not_equal), lambda a, b, y: (None, None),
    "{T}({0} != {1})", "({T})({0} != {1})", True, comparison=True, compares=True)

# --- the identity that blocks derivatives ------------------------------------------------
_op("stop", 1, np.positive, lambda a, y: (None,), "{0}", "{0}")

COMPARISONS = frozenset(name for name, op in OPS.items() if op.comparison)
