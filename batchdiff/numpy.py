"""``bd.numpy``: NumPy names that work on traced values and on plain arrays alike.

Inside a function batchdiff traces, ``np.sin(x)`` already works (NumPy dispatches
to the traced value). This namespace adds what NumPy cannot dispatch: building an
array from traced values (``array``, ``asarray``), and ``zeros``/``ones`` that accept
item assignment of traced values. Outside a trace everything here is plain NumPy.

>>> import numpy as np, batchdiff as bd
>>> def f(x):
...     out = bd.numpy.zeros(2)
...     out[0] = x[0] * x[1]
...     out[1] = bd.numpy.sin(x[0])
...     return out
>>> bd.jacobian(f)(np.array([[0.0, 2.0]]))
array([[[2., 0.],
        [1., 0.]]])
"""
import numpy as _np
from numpy import (  # noqa: F401  (re-exported: they dispatch to traced values)
    abs, absolute, arccos, arcsin, arctan, arctan2, clip, concatenate, cos, cosh, cross,
    diag, diff, divmod, dot, einsum, exp, exp2, expm1, floor_divide, fmax, fmin, gradient,
    hstack, hypot, linspace, log, log1p, log2, log10, matmul, maximum, mean, minimum, mod,
    nan_to_num, outer, pad, power, prod, remainder, reshape, round, select, sign, sin, sinc,
    sinh, sort, split, sqrt, square, stack, std, sum, tan, tanh, trace, transpose, var,
    vstack, where, zeros_like, ones_like, pi, e, inf, nan)

from .graph import active_graphs as _active_graphs
from .graph import apply as _apply
from .graph import Var as _Var
from .traced_array import TracedArray as _TracedArray
from .traced_array import _check_live, _has_tracer, _objects

linalg_norm = _np.linalg.norm


def array(obj, dtype=None):
    """``np.array`` that also stacks traced values: ``array([x[0] ** 2, x[1]])``.

    >>> import numpy as np, batchdiff as bd
    >>> F = lambda x: bd.numpy.array([x[0] ** 2, x[0] * x[1]])
    >>> bd.jacobian(F)(np.array([[2.0, 3.0]]))
    array([[[4., 0.],
            [3., 2.]]])
    """
    if _has_tracer(obj):
        _check_live(obj)
        return _TracedArray(_objects(obj).copy(), dtype or _np.float64)
    return _np.array(obj, dtype=dtype)


def asarray(obj, dtype=None):
    """``np.asarray`` that passes traced values through (and stacks lists of them).

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda x: np.sum(bd.numpy.asarray([x[0], 2.0 * x[1]]) ** 2)
    >>> bd.grad(f)(np.array([[1.0, 1.0]]))
    array([[2., 8.]])
    """
    if isinstance(obj, _TracedArray):
        _check_live(obj)
        return obj
    if _has_tracer(obj):
        return array(obj, dtype)
    return _np.asarray(obj, dtype=dtype)


def _filled(shape, value, dtype):
    if _active_graphs():
        return _TracedArray(_np.full(shape, float(value), dtype=object), dtype or _np.float64)
    return _np.full(shape, value, dtype=dtype or _np.float64)


def zeros(shape, dtype=None):
    """Zeros that accept traced values by item assignment while tracing.

    >>> import numpy as np, batchdiff as bd
    >>> def F(x):
    ...     out = bd.numpy.zeros(3)
    ...     out[0] = x[0] * x[1]
    ...     out[2] = np.sin(x[1])
    ...     return out
    >>> bd.jacobian(F)(np.array([[2.0, 0.0]]))
    array([[[0., 2.],
            [0., 0.],
            [0., 1.]]])
    """
    return _filled(shape, 0.0, dtype)


def ones(shape, dtype=None):
    """Ones that accept traced values by item assignment while tracing.

    >>> import numpy as np, batchdiff as bd
    >>> def F(x):
    ...     out = bd.numpy.ones(2)
    ...     out[1] = x[0] ** 2
    ...     return out
    >>> bd.jacobian(F)(np.array([[3.0]]))
    array([[[0.],
            [6.]]])
    """
    return _filled(shape, 1.0, dtype)


def stop_gradient(x):
    """The value of ``x`` with no derivative flowing through it (``tensor.detach()``).

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda x: np.sum(bd.stop_gradient(x * x) * x)
    >>> bd.grad(f)(np.array([[0.0, 1.0, 2.0, 3.0]]))
    array([[0., 1., 4., 9.]])
    """
    if not _has_tracer(x):
        return x
    _check_live(x)
    stop = _np.frompyfunc(lambda v: _apply("stop", (v,)) if isinstance(v, _Var) else v, 1, 1)
    result = stop(_objects(x))
    out = _np.empty(_np.shape(result), dtype=object)
    out[...] = result
    return _TracedArray(out, getattr(x, "dtype", _np.float64))


detach = stop_gradient
