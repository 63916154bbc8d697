"""NumPy ufuncs on traced values: each one a scalar function on graph nodes, applied
elementwise to the object arrays of nodes that ``TracedArray`` holds.

Primitives map to one op of ``ops.py``; derived ufuncs are written in terms of
primitives and need no derivative rule of their own. Python's operators on traced
values are these ufuncs too (``Operators``).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import UnsupportedOperationError
from .graph import Var, apply
from .ops import OPS
from .special import NUMPY_UFUNCS, scipy_ufuncs


def elementwise(op: str):
    """A scalar function for ``op`` on Vars and floats (floats alone fold in NumPy).

    >>> elementwise("hypot")(3.0, 4.0)
    5.0
    """
    value = OPS[op].value

    def fn(*args):
        if any(isinstance(a, Var) for a in args):
            return apply(op, args)
        with np.errstate(all="ignore"):
            return float(value(*(np.float64(a) for a in args)))
    return fn


def where_fn(c, a, b):
    """``np.where`` on one element: a ``where`` node if the condition is traced."""
    if isinstance(c, Var):
        return apply("where", (c, a, b))
    return a if c else b


_add, _mul, _div, _log, _exp = (elementwise(n) for n in ("add", "mul", "div", "log", "exp"))
_ne, _eq, _abs, _sub = (elementwise(n) for n in ("ne", "eq", "abs", "sub"))
_max = elementwise("max")

_lt, _gt, _floor, _rint, _sin = (elementwise(n) for n in ("lt", "gt", "floor", "rint", "sin"))
_stop, _fmod, _min = elementwise("stop"), elementwise("fmod"), elementwise("min")


def _or(a, b):
    return _max(_ne(a, 0.0), _ne(b, 0.0))


def _isnan(x):
    return _ne(x, x)


def _zero_signed_as(x):
    """0.0 with the sign of ``x``: C's copysign(0, x), derivative-free. The sign is that
    of x + 1/x, which has it for zeros (1/-0.0 is -inf) and infinities too."""
    return where_fn(_lt(_add(x, _div(1.0, x)), 0.0), -0.0, 0.0)


def _carrying(value, like):
    """``value`` with the derivatives of ``like``: stop(value) - (stop(like) - like).

    For a value whose formula loses its derivatives (a constant, or digits cancelling),
    ``like`` a formula equal to it there with good ones; a finite ``like`` keeps
    ``value`` bit for bit (like - like is +0.0, and v - 0.0 is v, -0.0 included)."""
    return _sub(_stop(value), _sub(_stop(like), like))


def divmod_fn(a, b):
    """``(np.floor_divide(a, b), np.remainder(a, b))`` on one element, as NumPy's
    ``npy_divmod`` computes them, written branch-free with ``where``.

    The remainder's derivatives are (1, -floor_divide(a, b)) everywhere, at exact
    multiples too; the quotient is piecewise constant, so its derivative is zero.

    >>> divmod_fn(-7.0, 2.0), divmod_fn(7.0, -0.0)[1]
    ((-4.0, 1.0), nan)
    """
    fm = _fmod(a, b)
    flip = _mul(_ne(fm, 0.0), _ne(_lt(b, 0.0), _lt(fm, 0.0)))    # Python's sign convention
    mod = where_fn(_eq(fm, 0.0), _carrying(_zero_signed_as(b), fm),
                   where_fn(flip, _add(fm, b), fm))
    div = _sub(_div(_sub(a, fm), b), flip)
    floor = _floor(div)
    snapped = _add(floor, _gt(_sub(div, floor), 0.5))              # to the nearest integer
    quotient = where_fn(_eq(div, 0.0), _zero_signed_as(_div(a, b)), snapped)
    return _stop(where_fn(_eq(b, 0.0), _div(a, b), quotient)), mod


def round_fn(decimals):
    """``np.round(x, decimals)`` on one element as NumPy computes it: rint(x * 10**d) / 10**d,
    or rint(x / 10**-d) * 10**-d for negative ``decimals`` (10**d by NumPy's power_of_ten)."""
    scale = 10.0 ** min(abs(decimals), 9)
    for _ in range(abs(decimals) - 9):
        scale *= 10.0
    if decimals == 0:
        return _rint
    if decimals > 0:
        return lambda x: _div(_rint(_mul(x, scale)), scale)
    return lambda x: _mul(_rint(_div(x, scale)), scale)


def _nan_ignoring(pick):
    """np.fmax/np.fmin from np.maximum/np.minimum: a NaN loses to a number."""
    return lambda a, b: where_fn(_isnan(b), a, where_fn(_isnan(a), b, pick(a, b)))


# sinc(x) = sin(πx)/(πx): NumPy's formula for the values (πx replaced by the machine
# epsilon where it is 0); below |πx| < 1/2 its derivatives cancel digits, so there they
# are the Taylor series' (terms to (πx)^14 leave 4e-20 at 1/2), and the formula's
# derivatives are taken at a safe argument instead (the "double where").
_SINC_SMALL = 0.5 / math.pi
_SINC_TAYLOR = [(-1.0) ** k / math.factorial(2 * k + 1) for k in range(8)]


def _sinc_formula(x):
    y = _mul(math.pi, x)
    y = where_fn(_eq(y, 0.0), float(np.finfo(np.float64).eps), y)
    return _div(_sin(y), y)


def sinc_fn(x):
    """np.sinc on one element: NumPy's value, derivatives of every order right at 0 too.

    >>> sinc_fn(0.0), sinc_fn(0.5) == 2 / math.pi
    (1.0, True)
    """
    small = _lt(_abs(x), _SINC_SMALL)
    y2 = _mul(_mul(math.pi, x), _mul(math.pi, x))
    series = 0.0
    for c in reversed(_SINC_TAYLOR):
        series = _add(_mul(series, y2), c)
    return where_fn(small, _carrying(_sinc_formula(x), series),
                    _sinc_formula(where_fn(small, 1.0, x)))

# NumPy ufunc -> scalar function. Primitives map to one op; derived ones are written
# in terms of primitives and need no derivative rule of their own.
UFUNCS = {
    np.add: _add, np.subtract: _sub, np.multiply: _mul, np.true_divide: _div,
    np.power: elementwise("pow"), np.float_power: elementwise("pow"),
    np.negative: elementwise("neg"), np.absolute: _abs, np.fabs: _abs,
    np.sqrt: elementwise("sqrt"), np.exp: _exp, np.log: _log,
    np.log1p: elementwise("log1p"), np.expm1: elementwise("expm1"),
    np.sin: elementwise("sin"), np.cos: elementwise("cos"), np.tan: elementwise("tan"),
    np.arcsin: elementwise("asin"), np.arccos: elementwise("acos"),
    np.arctan: elementwise("atan"), np.arctan2: elementwise("atan2"),
    np.sinh: elementwise("sinh"), np.cosh: elementwise("cosh"), np.tanh: elementwise("tanh"),
    np.arcsinh: elementwise("asinh"), np.arccosh: elementwise("acosh"),
    np.arctanh: elementwise("atanh"), np.cbrt: elementwise("cbrt"),
    np.floor: elementwise("floor"), np.ceil: elementwise("ceil"), np.trunc: elementwise("trunc"),
    np.rint: elementwise("rint"), np.fmod: elementwise("fmod"),
    np.hypot: elementwise("hypot"), np.maximum: _max, np.minimum: elementwise("min"),
    np.sign: elementwise("sign"),
    np.less: elementwise("lt"), np.less_equal: elementwise("le"),
    np.greater: elementwise("gt"), np.greater_equal: elementwise("ge"),
    np.equal: _eq, np.not_equal: _ne,
    # derived
    np.positive: lambda x: x,
    np.square: lambda x: _mul(x, x),
    np.reciprocal: lambda x: _div(1.0, x),
    np.log2: lambda x: _mul(_log(x), 1.0 / math.log(2.0)),
    np.log10: lambda x: _mul(_log(x), 1.0 / math.log(10.0)),
    np.exp2: lambda x: _exp(_mul(x, math.log(2.0))),
    np.deg2rad: lambda x: _mul(x, math.pi / 180.0),
    np.rad2deg: lambda x: _mul(x, 180.0 / math.pi),
    np.radians: lambda x: _mul(x, math.pi / 180.0),
    np.degrees: lambda x: _mul(x, 180.0 / math.pi),
    np.logical_and: lambda a, b: _mul(_ne(a, 0.0), _ne(b, 0.0)),
    np.logical_or: lambda a, b: _max(_ne(a, 0.0), _ne(b, 0.0)),
    np.logical_not: lambda a: _eq(a, 0.0),
    np.isnan: lambda x: _ne(x, x),
    np.isinf: lambda x: _eq(_abs(x), math.inf),
    np.isfinite: lambda x: _eq(_sub(x, x), 0.0),
    np.remainder: lambda a, b: divmod_fn(a, b)[1],
    np.floor_divide: lambda a, b: divmod_fn(a, b)[0],
    np.divmod: divmod_fn,
    np.fmax: _nan_ignoring(_max), np.fmin: _nan_ignoring(_min),
    np.conjugate: lambda x: x,
}
UFUNCS[np.bitwise_and] = UFUNCS[np.logical_and]
UFUNCS[np.bitwise_or] = UFUNCS[np.logical_or]
UFUNCS[np.invert] = UFUNCS[np.logical_not]
UFUNCS.update(NUMPY_UFUNCS)
REDUCIBLE = {np.add: 0.0, np.multiply: 1.0, np.maximum: None, np.minimum: None}  # -> identity


def check(ufunc, method):
    """Raise UnsupportedOperationError unless traced values support ``ufunc``.

    >>> check(np.frexp, "__call__")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchdiff.errors.UnsupportedOperationError: np.frexp is not supported on traced values; ...
    """
    if ufunc not in UFUNCS:
        UFUNCS.update(scipy_ufuncs())           # once SciPy is imported: its ufuncs
    if ufunc not in UFUNCS and not (ufunc is np.matmul and method == "__call__"):
        raise UnsupportedOperationError(
            f"np.{ufunc.__name__} is not supported on traced values; supported ufuncs: "
            + ", ".join(sorted(u.__name__ for u in UFUNCS)))


def _reduce_axes(pyfunc, arr, axis, keepdims):
    """``pyfunc.reduce`` over several axes (None: all), which frompyfunc's ufuncs refuse
    (they do not reorder): the axes moved last and merged into one, reduced in order."""
    axes = np.lib.array_utils.normalize_axis_tuple(
        tuple(range(arr.ndim)) if axis is None else axis, arr.ndim)
    rest = arr.ndim - len(axes)
    moved = np.moveaxis(arr, axes, range(rest, arr.ndim))
    result = np.empty(moved.shape[:rest], dtype=object)
    result[...] = pyfunc.reduce(moved.reshape(moved.shape[:rest] + (-1,)), axis=-1)
    if not keepdims:
        return result if rest else result[()]
    return result.reshape([1 if i in axes else n for i, n in enumerate(arr.shape)])


def call(ufunc, method, args, kwargs):
    """``ufunc``'s ``method`` ("__call__", "reduce" ...) on object arrays ``args``.

    ``ufunc`` has passed ``check``. Returns an object array, or one element.

    >>> call(np.add, "reduce", [np.array([1.0, 2.0, 3.0], dtype=object)], {})
    6.0
    """
    if ufunc is np.matmul and method == "__call__":
        return np.matmul(*args)
    pyfunc = np.frompyfunc(UFUNCS[ufunc], ufunc.nin, ufunc.nout)
    if method == "__call__":
        return pyfunc(*args)
    if method == "reduce" and ufunc in REDUCIBLE:
        axis = kwargs.get("axis", 0)
        keepdims = kwargs.get("keepdims", False)
        (arr,) = args
        empty = arr.size == 0 or (axis is not None and any(
            arr.shape[a] == 0 for a in np.atleast_1d(axis)))
        if empty:
            if REDUCIBLE[ufunc] is None:
                raise ValueError(f"np.{ufunc.__name__}.reduce of an empty traced array")
            return np.full(np.sum(np.zeros(arr.shape), axis=axis, keepdims=keepdims).shape,
                           REDUCIBLE[ufunc], dtype=object)
        if axis is None or not np.isscalar(axis):
            return _reduce_axes(pyfunc, arr, axis, keepdims)
        return pyfunc.reduce(arr, axis=axis, keepdims=keepdims)
    if method == "accumulate" and ufunc in (np.add, np.multiply):
        return pyfunc.accumulate(args[0], axis=kwargs.get("axis", 0))
    if method == "outer":
        return pyfunc.outer(*args)
    raise UnsupportedOperationError(
        f"np.{ufunc.__name__}.{method} is not supported on traced values")


class Operators:
    """Python's operators as the ufuncs they stand for: ``a + b`` is ``np.add(a, b)``.

    The base of an array-like that takes ufuncs through ``__array_ufunc__``.

    >>> import numpy as np, batchdiff as bd
    >>> bd.grad(lambda v: (v[0] - v[1]) ** 2)(np.array([[3.0, 1.0]]))
    array([[ 4., -4.]])
    """
    __slots__ = ()

    def __add__(self, o): return np.add(self, o)
    def __radd__(self, o): return np.add(o, self)
    def __sub__(self, o): return np.subtract(self, o)
    def __rsub__(self, o): return np.subtract(o, self)
    def __mul__(self, o): return np.multiply(self, o)
    def __rmul__(self, o): return np.multiply(o, self)
    def __truediv__(self, o): return np.true_divide(self, o)
    def __rtruediv__(self, o): return np.true_divide(o, self)
    def __floordiv__(self, o): return np.floor_divide(self, o)
    def __rfloordiv__(self, o): return np.floor_divide(o, self)
    def __mod__(self, o): return np.remainder(self, o)
    def __rmod__(self, o): return np.remainder(o, self)
    def __divmod__(self, o): return np.divmod(self, o)
    def __rdivmod__(self, o): return np.divmod(o, self)
    def __pow__(self, o): return np.power(self, o)
    def __rpow__(self, o): return np.power(o, self)
    def __matmul__(self, o): return np.matmul(self, o)
    def __rmatmul__(self, o): return np.matmul(o, self)
    def __neg__(self): return np.negative(self)
    def __pos__(self): return self
    def __abs__(self): return np.absolute(self)
    def __lt__(self, o): return np.less(self, o)
    def __le__(self, o): return np.less_equal(self, o)
    def __gt__(self, o): return np.greater(self, o)
    def __ge__(self, o): return np.greater_equal(self, o)
    def __eq__(self, o): return np.equal(self, o)
    def __ne__(self, o): return np.not_equal(self, o)
    def __and__(self, o): return np.logical_and(self, o)
    def __rand__(self, o): return np.logical_and(o, self)
    def __or__(self, o): return np.logical_or(self, o)
    def __ror__(self, o): return np.logical_or(o, self)
    def __invert__(self): return np.logical_not(self)
