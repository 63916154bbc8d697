"""Tracing: running a per-point NumPy function on arrays of scalar graph nodes.

``TracedArray`` (``traced_array.py``) is what the user's function receives: an
array-like of fixed shape whose elements are ``Var`` handles (or plain floats for
constants). NumPy ufuncs reach it through ``__array_ufunc__`` and NumPy functions through
``__array_function__``; both map onto the primitive ops of ``ops.py`` (``ufuncs.py``
holds the ufunc table, ``UFUNCS``). Structural functions (reshape, stack, indexing ...)
and the ones NumPy builds from ``+`` and ``*`` (sum, dot, matmul, cross, einsum ...) run
NumPy's own code on the object array of elements.

The tracer knows nothing of derivatives.
"""
from __future__ import annotations

import math

import numpy as np

from .graph import Graph, Var
from .traced_array import TracedArray, _objects
from .ufuncs import UFUNCS  # noqa: F401  (the ufunc table, read here by tests/test_ops.py)


def traced_inputs(graph: Graph, shape, dtype) -> TracedArray:
    """A TracedArray of fresh input nodes of ``graph`` in row-major order."""
    n = math.prod(shape)
    flat = np.empty(n, dtype=object)
    for i in range(n):
        flat[i] = Var(graph, graph.input())
    return TracedArray(flat.reshape(shape), dtype)


def output_nodes(graph: Graph, out):
    """Flatten a traced function's return value into (node ids, shape)."""
    if not isinstance(out, (TracedArray, Var, list, tuple, np.ndarray, np.generic,
                            int, float, bool)):
        raise TypeError(f"the function returned {type(out).__name__}; batchdiff needs it to "
                        "return an array or a number (one output; stack several with np.stack)")
    try:
        arr = _objects(out)
    except ValueError as e:
        raise ValueError(f"the function returned a sequence of unequal shapes ({e}); return one "
                         "array, e.g. np.concatenate of the raveled parts") from None
    return [graph.operand(v) for v in arr.ravel()], arr.shape


def trace(fn, shapes, dtype=np.float64):
    """Trace ``fn`` on one point whose arguments have ``shapes``.

    Returns ``(tape, out_shape, captured)``: the tape's inputs are the arguments'
    elements in order (row-major), then one input per value ``captured`` from an
    enclosing trace (a closure over an outer transform's argument).

    >>> import numpy as np
    >>> tape, shape, _ = trace(lambda v: np.sin(v[0]) * v[1], [(2,)])
    >>> print(tape)
    tape: 2 inputs, 2 ops, 1 outputs
      %0 = input 0
      %1 = input 1
      %2 = sin(%0)
      %3 = mul(%1, %2)
      out[0] = %3
    """
    g = Graph()
    # NumPy checks the floating-point flags after each object loop, so a flag left by
    # earlier arithmetic (a kernel's inf * 0) would come out of the trace as a warning
    with g, np.errstate(all="ignore"):
        args = [traced_inputs(g, s, dtype) for s in shapes]
        out = fn(*args)
        nodes, out_shape = output_nodes(g, out)
    return g.finish(nodes), out_shape, list(g.captured)
