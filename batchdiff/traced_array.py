"""``TracedArray``, the array-like a traced function receives, and the NumPy functions it handles.

Its elements are ``Var`` handles (or plain floats for constants) in an object array, or,
for a block-backed array, one block node holding them all (``block_trace.py``).
NumPy ufuncs reach it through ``__array_ufunc__`` (``ufuncs.py``) and NumPy functions
through ``__array_function__`` (``HANDLED_FUNCTIONS``). Products with constant matrices,
and ufuncs, sums and means of block-backed arrays, become block instructions; the other
structural functions (reshape, stack, indexing ...) and the ones NumPy builds from ``+``
and ``*`` (prod, cross, cumsum ...) run NumPy's own code on the object array of
elements (a block-backed array's are its ``index`` nodes, made when first asked for).
"""
from __future__ import annotations

import inspect
import math
import sys

import numpy as np

from . import block_trace, ufuncs
from .errors import LeakedTracerError, TracerConversionError, UnsupportedOperationError
from .graph import Var, active_graphs
from .ufuncs import Operators, elementwise, where_fn


def _objects(x):
    """The object array behind ``x`` (TracedArray, NumPy array, number, nested list)."""
    if isinstance(x, TracedArray):
        return x._v
    if isinstance(x, (list, tuple)):
        parts = [_objects(e) for e in x]
        if any(p.shape != parts[0].shape for p in parts):
            raise ValueError("nested sequence of traced values with unequal shapes: "
                             f"{[p.shape for p in parts]}")
        out = np.empty((len(parts),) + (parts[0].shape if parts else ()), dtype=object)
        for i, p in enumerate(parts):
            out[i, ...] = p       # copies elements (out[i] = p would nest a 0-d array)
        return out
    if isinstance(x, Var):
        out = np.empty((), dtype=object)
        out[()] = x
        return out
    arr = np.asarray(x)
    if arr.dtype.kind == "c":
        raise UnsupportedOperationError(
            f"complex numbers are not supported: {x!r} met a traced value. batchdiff "
            "differentiates real functions: keep real and imaginary parts as two real values")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"cannot use a value of dtype {arr.dtype} in a traced computation: "
                        "batchdiff handles real numbers (bool, int, float)")
    return arr.astype(np.float64).astype(object)


def _unwrap(x, inside=False):
    """Arguments as NumPy sees them: TracedArrays become their object arrays (a 0-d one
    in a list or tuple its element, as a NumPy scalar would be: NumPy would keep the
    0-d array itself as an element of the array it builds)."""
    if isinstance(x, TracedArray):
        return x._v[()] if inside and x.ndim == 0 else x._v
    if isinstance(x, (list, tuple)):
        items = [_unwrap(e, True) for e in x]
        return type(x)(items) if isinstance(x, list) else tuple(items)
    return x


def _wrap(result, dtype):
    if isinstance(result, np.ndarray):
        return TracedArray(result.astype(object, copy=False), dtype)
    arr = np.empty((), dtype=object)
    arr[()] = result
    return TracedArray(arr, dtype)


def _dtype_of(args):
    for a in args:
        if isinstance(a, TracedArray):
            return a.dtype
        if isinstance(a, (list, tuple)):
            d = _dtype_of(a)
            if d is not None:
                return d
    return None


def _has_tracer(x) -> bool:
    if isinstance(x, (TracedArray, Var)):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tracer(e) for e in x)
    return False


LEAKED = ("a traced value was used after the call of f that traced it had returned: it "
          "escaped that call (kept in a list, a global or a closure, as s.append(v) inside "
          "f does) and has no values outside it. Return it from f instead (several results: "
          "np.stack or np.concatenate them; f's value with its derivative: "
          "bd.value_and_grad or bd.jvp)")


def _check_live(x):
    """Raise LeakedTracerError if ``x`` holds traced values of a trace that has ended.

    A TracedArray outside every trace has escaped one; inside a trace, its first
    traced element must belong to a running trace (a mix is caught when the values
    meet, by ``Graph.operand``). Lists and tuples are searched.
    """
    if isinstance(x, TracedArray) and x._block is not None:
        values, first = None, x._block
    elif isinstance(x, TracedArray):
        values = x._v
        first = values.flat[0] if values.size else None
    elif isinstance(x, (list, tuple)):
        for e in x:
            _check_live(e)
        return
    elif isinstance(x, Var):
        values, first = None, x
    else:
        return
    stack = active_graphs()
    if not stack:
        raise LeakedTracerError(LEAKED)
    if not isinstance(first, Var) and values is not None:    # a constant first: look further
        first = next((v for v in values.flat if isinstance(v, Var)), None)
    if first is not None and first.graph not in stack:
        raise LeakedTracerError(LEAKED)


_NO_NUMBER = "it has no number while batchdiff traces your function (f runs once, on "\
             "placeholders for the values of one point). "


def _no_number(what: str, fix: str):
    """A method of TracedArray that needs a number: it raises, saying ``what`` and ``fix``."""
    def method(self, *args, **kwargs):
        _check_live(self)
        raise TracerConversionError(f"{what} of a traced value: {_NO_NUMBER}{fix}")
    method.__name__ = what
    return method


class TracedArray(Operators):
    """The array-like a batchdiff-transformed function receives for one point.

    It supports NumPy ufuncs, the NumPy functions listed in ``HANDLED_FUNCTIONS``,
    operators (``@`` and ``**`` included), static indexing and slicing, item
    assignment, ``reshape`` and ``.T``. Its values are unknown while tracing, so
    Python control flow on them raises; use ``np.where``.
    """
    __array_priority__ = 1000
    __slots__ = ("_elements", "_block", "_shape", "dtype")
    __hash__ = None

    def __init__(self, values, dtype=np.float64, block=None, shape=None):
        """``values``: the object array of elements; or None with ``block``, the block
        Var of them all (flat, row-major), and the array's ``shape``."""
        if block is not None and block.size == 0:     # a scalar: its one element
            values = np.empty(shape, dtype=object)
            values[...] = block
            block = None
        self._elements = values
        self._block = block
        self._shape = tuple(shape) if block is not None else None
        self.dtype = np.dtype(dtype)

    @property
    def _v(self) -> np.ndarray:
        """The object array of elements (a block's ``index`` nodes, made on first use)."""
        if self._elements is None:
            block = self._block
            graph = block.graph
            flat = np.empty(block.size, dtype=object)
            for k in range(block.size):
                flat[k] = Var(graph, graph.add("index", (block.id,), k))
            self._elements = flat.reshape(self._shape)
        return self._elements

    def _blocked(self, shape):
        """The same block, seen in ``shape`` (a reshape in row-major order)."""
        return TracedArray(None, self.dtype, block=self._block, shape=shape)

    # -- NumPy protocols -------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for x in inputs:
            _check_live(x)
        if kwargs.get("out") is not None:
            raise UnsupportedOperationError(
                f"np.{ufunc.__name__}(..., out=...) writes in place, which traced values do not "
                "support: use the returned value instead")
        ufuncs.check(ufunc, method)
        dtype = _dtype_of(inputs)
        if ufunc.nout > 1:                  # np.divmod: a tuple of arrays
            results = ufuncs.call(ufunc, method, [_objects(x) for x in inputs], kwargs)
            return tuple(_wrap(r, dtype) for r in results)
        if method == "__call__" and not kwargs:
            if ufunc is np.matmul:
                result = block_trace.matmul(*inputs, dtype)
            elif ufunc in ufuncs.UFUNCS:
                result = block_trace.elementwise(ufuncs.UFUNCS[ufunc], inputs, dtype)
            else:
                result = None
            if result is not None:
                return result
        return _wrap(ufuncs.call(ufunc, method, [_objects(x) for x in inputs], kwargs), dtype)

    def __array_function__(self, func, types, args, kwargs):
        _check_live(args)
        _check_live(list(kwargs.values()))
        handler = HANDLED_FUNCTIONS.get(func)
        if handler is None:
            name = getattr(func, "__module__", "numpy").replace("numpy", "np") + "." + func.__name__
            raise UnsupportedOperationError(
                f"{name} is not supported on traced values. Supported NumPy functions: "
                + ", ".join(sorted(f.__name__ for f in HANDLED_FUNCTIONS)))
        return handler(*args, **kwargs)

    def __array__(self, dtype=None, copy=None):
        _check_live(self)
        raise TracerConversionError(_array_message(_numpy_caller(sys._getframe(1))))

    # -- array attributes ------------------------------------------------------------
    shape = property(lambda self: self._shape if self._block is not None else self._v.shape)
    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))
    T = property(lambda self: self.transpose())
    mT = property(lambda self: self._moved(np.swapaxes(self._v, -1, -2)))

    def __repr__(self):
        return f"TracedArray(shape={self.shape}, dtype={self.dtype})"

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        _check_live(self)
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d traced value")
        return (TracedArray(np.asarray(self._v[i], dtype=object), self.dtype)
                if self.ndim > 1 else _wrap(self._v[i], self.dtype)
                for i in range(self.shape[0]))

    def __getitem__(self, key):
        _check_live(self)
        if _has_tracer(key if isinstance(key, tuple) else (key,)):
            raise TracerConversionError(
                "indexing with a traced value: indices must be known when tracing "
                "(Python ints, slices, or NumPy arrays); select values with np.where instead")
        return _wrap(self._v[_unwrap(key)], self.dtype)

    def __setitem__(self, key, value):
        _check_live(value)
        if _has_tracer(key if isinstance(key, tuple) else (key,)):
            raise TracerConversionError("assignment at a traced index is not supported: "
                                        "indices must be known when tracing")
        obj = _objects(value)
        elements = self._v.copy() if self._block is not None else self._v
        self._block = self._shape = None        # the elements change: no longer the block
        elements[key] = obj[()] if obj.ndim == 0 else obj
        self._elements = elements

    # -- what needs a number: Python control flow, conversions, rounding ----------------
    def __bool__(self):
        _check_live(self)
        Var.__bool__(self)

    def __float__(self):
        _check_live(self)
        Var.__float__(self)

    __int__ = _no_number(
        "int()", "A count, size or index must be known when tracing: take it from a shape "
        "(len(x), x.shape[0]) or pass it in as a Python int (a keyword argument of f is a "
        "constant of the trace)")
    __index__ = _no_number(
        "an index or count (list[v], range(v), a slice bound)", "Indices must be known when "
        "tracing: use Python ints, and select values with np.where(cond, a, b) instead")
    __complex__ = _no_number(
        "complex()", "batchdiff differentiates real functions: keep the real and imaginary "
        "parts as two real values")
    item = _no_number(
        "v.item()", "Use v itself: a traced 0-d value works in arithmetic and NumPy functions "
        "(v[i] or v.reshape(()) picks one element); for a value the derivative does not flow "
        "through, as PyTorch's tensor.item() gives, use bd.stop_gradient(v)")
    tolist = _no_number(
        "v.tolist()", "Use v itself, or list(v) for a list of its traced elements")
    _round_to_int = _no_number(
        "round() to an int", "Use np.round(v) or np.rint(v), which stay traced values (with "
        "a zero derivative), or round(v, ndigits)")

    def __round__(self, ndigits=None):
        if ndigits is None:
            self._round_to_int()
        return np.round(self, ndigits)
    __trunc__ = _no_number("math.trunc()", "Truncate outside f and pass the numbers in")
    __floor__ = _no_number("math.floor()", "Round down outside f and pass the numbers in")
    __ceil__ = _no_number("math.ceil()", "Round up outside f and pass the numbers in")

    def __format__(self, spec):
        if not spec:
            return repr(self)
        _check_live(self)
        raise TracerConversionError(
            f"formatting a traced value with {spec!r}: {_NO_NUMBER}Print numbers outside f, "
            "from the arrays the transform returns (bd.value_and_grad gives f's values too)")

    # -- methods ---------------------------------------------------------------------
    def _moved(self, values):
        """A TracedArray of ``values``, moved out of this one (which must be live)."""
        _check_live(self)
        return TracedArray(values, self.dtype)

    def _same_order(self, reshaped):
        """``reshaped(array)`` of this array's layout, as the same block when it keeps the
        elements' row-major order, else of the elements."""
        if self._block is not None:
            _check_live(self)
            return self._blocked(reshaped(np.empty(self.shape, dtype=bool)).shape)
        return self._moved(reshaped(self._v))

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if order != "C":
            return self._moved(self._v.reshape(shape, order=order))
        return self._same_order(lambda a: a.reshape(shape))

    def transpose(self, *axes):
        if self._block is not None and self.ndim <= 1:
            return self._same_order(lambda a: a)
        return self._moved(self._v.transpose(*axes))

    def ravel(self):
        return self._same_order(np.ravel)

    flatten = ravel

    def squeeze(self, axis=None):
        return self._same_order(lambda a: a.squeeze(axis))

    def copy(self):
        return self._same_order(lambda a: a.copy())

    def astype(self, dtype, copy=True):
        if np.dtype(dtype).kind != "f":
            raise TracerConversionError(f"astype({dtype}) of a traced value: only float "
                                        "dtypes are supported while tracing")
        _check_live(self)
        if self._block is not None:
            return TracedArray(None, dtype, block=self._block, shape=self.shape)
        return TracedArray(self._v.copy(), dtype)

    def sum(self, axis=None, keepdims=False):
        return np.sum(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False):
        return np.prod(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return np.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return np.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return np.min(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        return np.var(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, ddof=0, keepdims=False):
        return np.std(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def round(self, decimals=0):
        return np.round(self, decimals)

    def dot(self, other):
        return np.dot(self, other)

    # a real value is its own real part and conjugate; its imaginary part is 0
    real = property(lambda self: self)
    imag = property(lambda self: np.zeros_like(self))

    def conj(self):
        return self

    conjugate = conj


def _numpy_caller(frame):
    """The public name of the NumPy or SciPy function the user called that asked for an
    array: of the NumPy/SciPy frames from ``frame`` out to the user's, the outermost
    with a public name (np.mean, scipy.special.logsumexp, np.r_); None when the user
    called NumPy's C code (np.array, np.asarray) directly."""
    name = None
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
            "numpy", "scipy"):
        name = _public_name(frame) or name or frame.f_code.co_qualname + "(...)"
        frame = frame.f_back
    return name


def _public_name(frame):
    """``frame``'s function as the user spells it (np.mean, scipy.special.logsumexp, np.r_
    for its ``__getitem__``), or None if its module's public package does not export it."""
    parts = frame.f_globals["__name__"].split(".")
    public = next((i for i, p in enumerate(parts) if p.startswith("_")), len(parts))
    package = ".".join(parts[:public])
    module = sys.modules.get(package)
    spelled = package.replace("numpy", "np", 1) + "."
    code = frame.f_code
    if code.co_name == "__getitem__":           # np.r_[...]: indexing one of its objects
        owner = frame.f_locals.get("self")
        root = sys.modules[parts[0]]
        return next((parts[0].replace("numpy", "np") + "." + n + "[...]" for n in dir(root)
                     if getattr(root, n) is owner), None)
    function = inspect.unwrap(getattr(module, code.co_name, None) or (lambda: None))
    return spelled + code.co_name + "(...)" if getattr(function, "__code__", None) is code else None


def _array_message(caller):
    """What to say when a traced value is asked for as a NumPy array by ``caller``."""
    fix = ("Build arrays from traced values with np.stack([...]) or bd.numpy.array([...]), "
           "and call NumPy functions on those")
    if caller is None:
        return ("np.array/np.asarray of a traced value, or of a list of them (or writing one "
                f"into a NumPy array): {_NO_NUMBER}{fix}")
    if caller.startswith("scipy.special."):
        fix = f"Use batchdiff.special.{caller[14:-5]}, written for traced values"
    return (f"{caller} asked for a traced value as a NumPy array (NumPy and SciPy convert "
            f"the arguments they do not dispatch, a Python list of traced values among them): "
            f"{_NO_NUMBER}{fix}")


# -- NumPy functions ------------------------------------------------------------------

def _by_numpy(func):
    """Run NumPy's own ``func`` on the object arrays (it only moves elements or uses + and *);
    a list or tuple of arrays it returns (np.split) is one of TracedArrays."""
    def handler(*args, **kwargs):
        dtype = _dtype_of(args) or _dtype_of(list(kwargs.values()))
        result = func(*_unwrap(list(args)), **{k: _unwrap(v) for k, v in kwargs.items()})
        if isinstance(result, (list, tuple)):
            return type(result)(_wrap(r, dtype) for r in result)
        return _wrap(result, dtype)
    return handler


def _elementwise(fn, *args):
    """The scalar function ``fn`` on broadcast ``args``: one block instruction where
    ``block_trace`` fits it, else ``fn`` per element."""
    dtype = _dtype_of(args)
    result = block_trace.elementwise(fn, args, dtype)
    if result is not None:
        return result
    return _wrap(np.frompyfunc(fn, len(args), 1)(*(_objects(x) for x in args)), dtype)


def _where(condition, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedOperationError(
            "np.where(condition) with one argument (indices of non-zeros) depends on values; "
            "use the three-argument np.where(condition, x, y)")
    return _elementwise(where_fn, condition, x, y)


def _or_elements(block_rule, func):
    """A handler trying ``block_rule(*args, dtype=..., **kwargs)`` first, then NumPy's
    ``func`` on the elements."""
    by_numpy = _by_numpy(func)

    def handler(*args, **kwargs):
        dtype = _dtype_of(args) or _dtype_of(list(kwargs.values()))
        try:
            result = block_rule(*args, dtype=dtype, **kwargs)
        except TypeError:       # arguments the block rule does not take: NumPy's turn
            result = None
        return by_numpy(*args, **kwargs) if result is None else result
    return handler


def _block_sum(a, axis=None, dtype=None, keepdims=False, **kwargs):
    return None if kwargs else block_trace.total(a, axis, keepdims, dtype)


def _block_mean(a, axis=None, dtype=None, keepdims=False, **kwargs):
    return None if kwargs else block_trace.total(a, axis, keepdims, dtype, mean=True)


def _block_dot(a, b, dtype=None, out=None):
    return None if out is not None else block_trace.dot(a, b, dtype)


def _block_inner(a, b, dtype=None):
    return block_trace.dot(a, b, dtype) if np.ndim(a) == 1 and np.ndim(b) == 1 else None


def _block_tensordot(a, b, axes=2, dtype=None):
    return block_trace.tensordot(a, b, axes, dtype)


def _block_reshape(a, shape=None, order="C", **kwargs):
    shape = kwargs.pop("newshape", shape)
    if kwargs or not isinstance(a, TracedArray) or a._block is None or order != "C":
        return None
    return a.reshape(shape)


def _block_ravel(a, order="C", dtype=None):
    if not isinstance(a, TracedArray) or a._block is None or order != "C":
        return None
    return a.ravel()


def _reduction(ufunc):
    def handler(a, axis=None, keepdims=False, **kwargs):
        if kwargs.get("out") is not None or kwargs.get("where", True) is not True:
            raise UnsupportedOperationError(
                f"np.{ufunc.__name__} reductions with out= or where= are not supported")
        return ufunc.reduce(a if isinstance(a, TracedArray) else _wrap(_objects(a), None),
                            axis=axis, keepdims=keepdims)
    return handler


def _like(fill):
    def handler(a, dtype=None, shape=None, **kwargs):
        shape = (a.shape if isinstance(a, TracedArray) else np.shape(a)) if shape is None else shape
        return TracedArray(np.full(shape, fill, dtype=object), dtype or getattr(a, "dtype", None))
    return handler


def _full_like(a, fill_value, dtype=None, shape=None, **kwargs):
    shape = a.shape if shape is None else shape
    return _wrap(np.broadcast_to(_objects(fill_value), shape).copy(), dtype or a.dtype)


def _clip(a, a_min=None, a_max=None, **kwargs):
    """np.clip as one ``clip`` op per element (a missing bound is an infinite one)."""
    a_min = kwargs.pop("min", a_min)
    a_max = kwargs.pop("max", a_max)
    if kwargs.get("out") is not None:
        raise UnsupportedOperationError(
            "np.clip(..., out=...) writes in place, which traced values do not support: "
            "use the returned value instead")
    if a_min is None and a_max is None:
        return a
    return _elementwise(elementwise("clip"), a, -math.inf if a_min is None else a_min,
                        math.inf if a_max is None else a_max)


def _shape(a):
    return a.shape


HANDLED_FUNCTIONS = {
    # structural: NumPy moves the elements
    **{f: _by_numpy(f) for f in (
        np.transpose, np.squeeze, np.expand_dims, np.moveaxis,
        np.swapaxes, np.stack, np.concatenate, np.hstack, np.vstack, np.column_stack,
        np.atleast_1d, np.atleast_2d, np.diag, np.diagonal, np.flip, np.roll,
        np.broadcast_to, np.tile, np.repeat, np.copy, np.triu, np.tril, np.fliplr,
        np.flipud)},
    # built by NumPy from + and * on the elements
    **{f: _by_numpy(f) for f in (
        np.prod, np.vdot, np.outer, np.cross, np.trace, np.cumsum, np.cumprod, np.kron)},
    # block instructions where they fit (block_trace), else NumPy's on the elements
    np.sum: _or_elements(_block_sum, np.sum),
    np.mean: _or_elements(_block_mean, np.mean),
    np.dot: _or_elements(_block_dot, np.dot),
    np.inner: _or_elements(_block_inner, np.inner),
    np.tensordot: _or_elements(_block_tensordot, np.tensordot),
    np.einsum: _or_elements(block_trace.einsum, np.einsum),
    np.reshape: _or_elements(_block_reshape, np.reshape),
    np.ravel: _or_elements(_block_ravel, np.ravel),
    np.where: _where,
    np.max: _reduction(np.maximum), np.amax: _reduction(np.maximum),
    np.min: _reduction(np.minimum), np.amin: _reduction(np.minimum),
    np.zeros_like: _like(0.0), np.ones_like: _like(1.0), np.empty_like: _like(0.0),
    np.full_like: _full_like,
    np.clip: _clip,
    np.shape: _shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
}

from .linalg import HANDLED as _LINALG  # noqa: E402  (they read the helpers above)
from .numpy_functions import HANDLED as _MORE  # noqa: E402

HANDLED_FUNCTIONS.update(_LINALG)
HANDLED_FUNCTIONS.update(_MORE)
