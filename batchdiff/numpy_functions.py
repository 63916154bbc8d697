"""NumPy's statistics, splitting, differences, padding, sorting, selection, rounding and
``linspace`` on traced values (``HANDLED``, merged into ``traced_array.HANDLED_FUNCTIONS``).

Where NumPy's own code only moves elements or uses ``+ - * /`` it runs on the object
array of elements (``_by_numpy``); the rest is written with NumPy functions and ufuncs
on TracedArrays, or with the scalar functions of ``ufuncs.py``. Derivatives of every
order come from the ops those are made of.
"""
from __future__ import annotations

import numpy as np

from . import ufuncs
from .errors import UnsupportedOperationError
from .traced_array import (TracedArray, _by_numpy, _dtype_of, _elementwise, _has_tracer,
                           _objects, _wrap)
from .ufuncs import where_fn


def _traced(a):
    """``a`` as a TracedArray (a list of traced values, or constants, stacked)."""
    return a if isinstance(a, TracedArray) else _wrap(_objects(a), _dtype_of([a]))


def _refuse(name, out=None, where=True):
    if out is not None or where is not True:
        raise UnsupportedOperationError(
            f"np.{name}(..., out=... or where=...) is not supported on traced values: use "
            "the returned value, and np.where to pick elements")


# -- statistics ----------------------------------------------------------------------

def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
         mean=None, correction=None):
    """np.var as NumPy computes it: the sum of squared deviations from the mean over
    n - ddof (``correction`` is ddof's other name; n - ddof <= 0 gives inf or NaN)."""
    _refuse("var", out, where)
    a = _traced(a)
    ddof = ddof if correction is None else correction
    centre = np.mean(a, axis=axis, keepdims=True) if mean is None else mean
    n = a.size // max(np.sum(np.zeros(a.shape), axis=axis, keepdims=True).size, 1)
    deviation = a - centre
    return np.sum(deviation * deviation, axis=axis, keepdims=keepdims) / max(n - ddof, 0)


def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
         mean=None, correction=None):
    """np.std: the square root of ``np.var`` (its derivative is infinite where var is 0)."""
    return np.sqrt(_var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean,
                        correction=correction))


# -- padding -------------------------------------------------------------------------

_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap", "mean")


def _pad(array, pad_width, mode="constant", **kwargs):
    """np.pad by NumPy's own code on the elements, for the modes that only copy elements
    or average them (a constant fill is a float, as NumPy's would be in a float array)."""
    if mode not in _PAD_MODES:
        raise UnsupportedOperationError(
            f"np.pad(..., mode={mode!r}) is not supported on traced values (it compares "
            f"values); supported modes: {', '.join(_PAD_MODES)}")
    if mode == "constant" and not _has_tracer(kwargs.get("constant_values", 0.0)):
        kwargs["constant_values"] = np.asarray(kwargs.get("constant_values", 0.0), np.float64)
    return _by_numpy(np.pad)(array, pad_width, mode=mode, **kwargs)


# -- sorting -------------------------------------------------------------------------

def sorting_network(n):
    """Comparator pairs ``(i, j)``, i < j, that sort ``n`` items: Batcher's merge-exchange
    sort (Knuth, TAOCP 3, 5.2.2 Algorithm M), about n log²n / 4 of them, for any n.

    >>> sorting_network(3)
    [(0, 2), (0, 1), (1, 2)]
    """
    pairs = []
    t = max(n - 1, 0).bit_length()
    p = 1 << (t - 1) if t else 0
    while p > 0:
        q, r, d = 1 << (t - 1), 0, p
        while True:
            pairs += [(i, i + d) for i in range(n - d) if i & p == r]
            if q == p:
                break
            d, q, r = q - p, q >> 1, p
        p >>= 1
    return pairs


def _compare_exchange(a, b):
    """``(low, high)`` of two elements, NaN counting as the largest (as np.sort puts it):
    each is one of the two elements, picked by ``where``, with its derivatives."""
    swap = ufuncs.UFUNCS[np.logical_or](ufuncs.UFUNCS[np.less](b, a), ufuncs.UFUNCS[np.isnan](a))
    return where_fn(swap, b, a), where_fn(swap, a, b)


def _sorted_rows(values):
    """Each row (last axis) of the object array ``values`` through the sorting network."""
    rows = values.reshape(-1, values.shape[-1]).copy()
    for row in rows:
        for i, j in sorting_network(len(row)):
            row[i], row[j] = _compare_exchange(row[i], row[j])
    return rows.reshape(values.shape)


def _sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """np.sort by a branch-free sorting network: each output is the element that lands
    there, derivatives included (at a tie, one of the equal elements'); NaNs go last.
    ``kind`` and ``stable`` make no difference to the values."""
    if order is not None:
        raise UnsupportedOperationError("np.sort(..., order=...) sorts structured arrays, "
                                        "which traced values are not")
    a = _traced(a)
    values = a._v.reshape(-1) if axis is None else np.moveaxis(a._v, axis, -1)
    result = _sorted_rows(values)
    return _wrap(result if axis is None else np.moveaxis(result, -1, axis), a.dtype)


def _partition(a, kth, axis=-1, kind="introselect", order=None):
    """np.partition as a full sort (which meets its contract: the ``kth`` elements in
    place, no larger ones before and no smaller ones after); NumPy leaves the order
    within each side unspecified, so the values there may be ordered differently."""
    n = np.size(a) if axis is None else np.shape(a)[axis]
    if not all(-n <= k < n for k in np.atleast_1d(kth)):
        raise ValueError(f"kth {kth} out of bounds for an axis of size {n}")
    return _sort(a, axis, order=order)


# -- selection, cleanup, rounding --------------------------------------------------------

def _select(condlist, choicelist, default=0):
    """np.select as nested np.where: the first condition that holds picks its choice."""
    if len(condlist) != len(choicelist):
        raise ValueError("list of cases must be same length as list of conditions")
    result = default
    for condition, choice in reversed(list(zip(condlist, choicelist))):
        result = np.where(condition, choice, result)
    return _traced(result)


def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """np.nan_to_num with ``where``: NaN -> ``nan``, ±inf -> ``posinf``/``neginf`` (by
    default the largest finite numbers of x's dtype); finite values keep derivatives."""
    x = _traced(x)
    big = float(np.finfo(x.dtype).max)
    infinite = np.where(x > 0, big if posinf is None else posinf,
                        -big if neginf is None else neginf)
    return np.where(np.isnan(x), nan, np.where(np.isinf(x), infinite, x))


def _round(a, decimals=0, out=None):
    """np.round/np.around as NumPy computes it (``ufuncs.round_fn``); zero derivative."""
    _refuse("round", out)
    return _elementwise(ufuncs.round_fn(decimals), a)


def _fix(x, out=None):
    """np.fix, rounding toward zero: np.trunc (bit for bit, -0.0 included)."""
    _refuse("fix", out)
    return np.trunc(x)


def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0,
              *, device=None):
    """np.linspace with traced ``start``/``stop`` (``num`` a constant), as NumPy computes
    it: start + i * step, the last one ``stop`` itself when ``endpoint``."""
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise UnsupportedOperationError(f"np.linspace(..., dtype={dtype}) of traced values: "
                                        "only float dtypes are supported while tracing")
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    start, stop = _traced(start), _traced(stop)
    div = num - 1 if endpoint else num
    delta = stop - start
    steps = np.arange(num, dtype=np.float64).reshape((-1,) + (1,) * delta.ndim)
    step = delta / div if div > 0 else delta * np.nan
    y = (steps * step if div > 0 else steps * delta) + start
    if endpoint and num > 1:
        y = np.concatenate([y[:-1], stop[None]])
    y = np.moveaxis(y, 0, axis)
    return (y, step) if retstep else y


def _gradient(f, *varargs, axis=None, edge_order=1):
    """np.gradient as NumPy computes it for scalar spacings (constant or traced): central
    differences inside, one-sided ones of ``edge_order`` 1 or 2 at the edges; a tuple of
    one array per axis, or the array for one axis."""
    f = _traced(f)
    axes = tuple(range(f.ndim)) if axis is None else tuple(
        int(ax) % f.ndim for ax in np.atleast_1d(axis))
    spacings = varargs * len(axes) if len(varargs) == 1 else varargs or (1.0,) * len(axes)
    if len(spacings) != len(axes):
        raise TypeError("invalid number of arguments")
    if any(np.ndim(h) != 0 for h in spacings):
        raise UnsupportedOperationError(
            "np.gradient of traced values takes scalar spacings, not coordinate arrays")
    if edge_order not in (1, 2):
        raise ValueError("'edge_order' greater than 2 not supported")
    out = []
    for ax, h in zip(axes, spacings):
        g = np.moveaxis(f, ax, 0)
        if len(g) < edge_order + 1:
            raise ValueError("Shape of array too small to calculate a numerical gradient, "
                             "at least (edge_order + 1) elements are required.")
        if edge_order == 1:
            first, last = (g[1] - g[0]) / h, (g[-1] - g[-2]) / h
        else:
            first = -1.5 / h * g[0] + 2.0 / h * g[1] + -0.5 / h * g[2]
            last = 0.5 / h * g[-3] + -2.0 / h * g[-2] + 1.5 / h * g[-1]
        inner = (g[2:] - g[:-2]) / (2.0 * h)
        out.append(np.moveaxis(np.concatenate([first[None], inner, last[None]]), 0, ax))
    return out[0] if len(out) == 1 else tuple(out)


def _real(val):
    """np.real of a real traced value: the value itself."""
    return _traced(val)


def _imag(val):
    """np.imag of a real traced value: zeros."""
    return np.zeros_like(_traced(val))


HANDLED = {
    np.var: _var, np.std: _std,
    **{f: _by_numpy(f) for f in (
        np.split, np.array_split, np.hsplit, np.vsplit, np.dsplit, np.diff,
        np.append, np.rot90, np.rollaxis, np.atleast_3d)},
    np.pad: _pad,
    np.sort: _sort, np.partition: _partition,
    np.select: _select,
    np.nan_to_num: _nan_to_num,
    np.round: _round, np.around: _round, np.fix: _fix,
    np.linspace: _linspace,
    np.gradient: _gradient,
    np.sinc: lambda x: _elementwise(ufuncs.sinc_fn, x),
    np.real: _real, np.imag: _imag,
}
