"""Array calls on traced values that become block instructions (``blocks.py``).

A ``TracedArray`` either holds one node per element (an object array of ``Var``) or is
*block-backed*: one block node holding all its elements, flat in row-major order.
Blocks start where unrolling costs most, a product with a constant matrix of at least
``LINEAR_MIN`` entries or ``LINEAR_MIN_ROWS`` rows (``W @ x``, ``x @ W``, ``np.dot``,
``np.tensordot``, ``np.einsum``), and spread from there: a ufunc, ``np.where`` or ``np.clip`` with a
block-backed operand is one block instruction, and ``np.sum``/``np.mean`` of one a
``sum`` (or, over one axis, a ``linear`` with a row of ones). Everything else reads a
block's elements one by one (``index``), so scalar code mixes with blocks freely.

Each function here returns the result, or None when the call does not fit a block
instruction: the caller then runs it on the elements, as for any traced array.

>>> import numpy as np, batchdiff as bd
>>> W = np.cos(np.arange(4096.0)).reshape(64, 64) / 8
>>> tape = bd.hessian(lambda x: np.sum(np.tanh(W @ np.tanh(W @ x)))).tape(np.ones((1, 64)))
>>> tape.num_ops, tape.op_counts["linear"], tape.op_counts["index"]    # 2,080 outputs
(2858, 195, 2080)
"""
from __future__ import annotations

import math
import string

import numpy as np

from .blocks import Array
from .graph import Var

# A product with a constant m x k matrix becomes a block instruction when it has at least
# LINEAR_MIN entries or LINEAR_MIN_ROWS rows (a long result would be as many scalar
# chains downstream), or when the traced operand is block-backed already; else it is
# unrolled into scalar multiply-adds, which run as fast or faster for small matrices:
# SIMD across points with every value in a register. On tanh MLPs (python
# benchmarks/block_crossover.py, benchmarks/results/block_crossover.md) unrolled kernels
# ran as fast as blocks at 16 x 16 products with 3 inputs and 1.8x as fast with 8 (the
# Hessian's 8 directions are 8 small products each), within 10% at 23 x 23, and blocks
# won from 32 x 32 (1.2x the gradient, 1.6x the Hessian), compiling 3-12x sooner.
LINEAR_MIN = 512
LINEAR_MIN_ROWS = 32


def _traced_array():
    from .traced_array import TracedArray
    return TracedArray


def is_block(x) -> bool:
    """Whether ``x`` is a block-backed ``TracedArray``."""
    return getattr(x, "_block", None) is not None


def _graph(items):
    """The innermost graph among the Vars of ``items`` (TracedArrays, Vars), or None."""
    graph = None
    for x in items:
        if isinstance(x, Var):
            var = x
        elif is_block(x):
            var = x._block
        else:
            continue
        if graph is None or (var.graph is not graph and var.graph.depth > graph.depth):
            graph = var.graph
    if graph is None:
        for x in items:
            if isinstance(x, _traced_array()):
                var = next((e for e in x._v.flat if isinstance(e, Var)), None)
                if var is not None and (graph is None or var.graph.depth > graph.depth):
                    graph = var.graph
    return graph


def block_of(graph, x) -> Var:
    """The block Var of a TracedArray's elements in ``graph`` (``pack`` of them if it is
    not block-backed)."""
    if is_block(x):
        return Var(graph, graph.operand(x._block))
    elements = [graph.operand(e) for e in x._v.ravel()]
    return Var(graph, graph.add("pack", tuple(elements)))


def _shape(x):
    return x.shape if hasattr(x, "shape") else ()


def _operand(graph, x, n):
    """``x`` as an argument of an elementwise op on blocks of ``n``: a block Var, a scalar
    (Var or float) broadcast to every element, or None if it does not fit."""
    TracedArray = _traced_array()
    if isinstance(x, Var):
        return x
    if isinstance(x, TracedArray):
        if x.size == n:
            return block_of(graph, x)
        if x.size == 1:
            return x._v.reshape(())[()] if not is_block(x) else Var(
                graph, graph.add("index", (graph.operand(x._block),), 0))
        return None
    if isinstance(x, (bool, int, float, np.generic)) and np.ndim(x) == 0:
        return float(x)
    try:
        a = np.asarray(x)
    except Exception:
        return None
    if a.dtype.kind not in "biuf":
        return None
    if a.size == 1:
        return float(a.reshape(()))
    if a.size != n:
        return None
    return Var(graph, graph.const(a.astype(np.float64).ravel()))


def elementwise(fn, inputs, dtype):
    """``fn`` (a scalar function on Vars, ``ufuncs.UFUNCS``) on ``inputs`` as one block
    instruction, when one of them is block-backed and the others are its shape or
    broadcast as scalars."""
    if not any(is_block(x) for x in inputs):
        return None
    try:
        shape = np.broadcast_shapes(*(_shape(x) for x in inputs))
    except ValueError:
        return None
    n = math.prod(shape)
    if n < 1:
        return None
    graph = _graph(inputs)
    args = [_operand(graph, x, n) for x in inputs]
    if any(a is None for a in args):
        return None
    result = fn(*args)
    if not isinstance(result, Var):
        result = Var(graph, graph.const(float(result)))
    if result.size != n:
        result = Var(result.graph, result.graph.fit(result.id, n))
    return _traced_array()(None, dtype, block=result, shape=shape)


def _constant(x):
    """``x`` as a float64 array if it is a plain numeric array or number, else None."""
    if isinstance(x, (_traced_array(), Var)) or isinstance(x, (list, tuple)):
        return None
    a = np.asarray(x)
    return a.astype(np.float64) if a.dtype.kind in "biuf" else None


def _linear(x, W, g, h, shape, dtype):
    """``linear[W, g, h]`` of TracedArray ``x``, shaped ``shape``."""
    graph = _graph([x])
    v = block_of(graph, x)
    node = graph.add("linear", (v.id,), (Array(W), g, h))
    return _traced_array()(None, dtype, block=Var(graph, node), shape=shape)


def _worth_it(x, W) -> bool:
    """Whether ``W @ x`` (``W`` the m x k matrix of the ``linear``) should be a block:
    ``x`` is one already, or ``W`` is large or long (and ``x`` holds a traced value: a
    product of constants is computed here)."""
    big = W.size >= LINEAR_MIN or W.shape[0] >= LINEAR_MIN_ROWS
    return is_block(x) or big and _graph([x]) is not None


def matmul(a, b, dtype):
    """``a @ b`` (and ``np.dot`` of 1-D and 2-D operands) with one constant operand."""
    TracedArray = _traced_array()
    if isinstance(a, TracedArray) and isinstance(b, TracedArray):
        return _traced_dot(a, b, dtype)
    if isinstance(a, TracedArray):
        x, W, left = a, _constant(b), False
    elif isinstance(b, TracedArray):
        x, W, left = b, _constant(a), True
    else:
        return None
    if W is None or W.ndim not in (1, 2) or x.ndim not in (1, 2) or W.size == 0 or x.size == 0:
        return None
    if not _worth_it(x, W):
        return None
    if left:                                   # W @ x: contract W's last axis, x's first
        k = W.shape[-1]
        if x.shape[0] != k:
            return None
        M = W if W.ndim == 2 else W[None, :]
        h = x.shape[1] if x.ndim == 2 else 1
        shape = W.shape[:-1] + x.shape[1:]
        return _linear(x, M, 1, h, shape, dtype)
    k = W.shape[0]                             # x @ W: contract x's last axis, W's first
    if x.shape[-1] != k:
        return None
    M = W.T if W.ndim == 2 else W[None, :]
    g = x.shape[0] if x.ndim == 2 else 1
    shape = x.shape[:-1] + W.shape[1:]
    return _linear(x, M, g, 1, shape, dtype)


def _traced_dot(a, b, dtype):
    """The dot product of two traced vectors, one of them block-backed: ``sum(a * b)``."""
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape or not (is_block(a) or is_block(b)):
        return None
    graph = _graph([a, b])
    product = block_of(graph, a) * block_of(graph, b)
    return _traced_array()(None, dtype, block=Var(graph, graph.add("sum", (product.id,))),
                           shape=())


def dot(a, b, dtype):
    """``np.dot(a, b)`` for 1-D and 2-D operands: ``matmul``."""
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return None
    return matmul(a, b, dtype)


def tensordot(a, b, axes, dtype):
    """``np.tensordot(a, b, axes)`` with one constant operand whose result is a
    ``linear`` without moving the traced operand's axes."""
    TracedArray = _traced_array()
    if isinstance(axes, (int, np.integer)):
        n_a = np.ndim(a)
        axes_a, axes_b = list(range(n_a - axes, n_a)), list(range(axes))
    else:
        axes_a, axes_b = ([x] if np.ndim(x) == 0 else list(x) for x in axes)
    letters = iter(string.ascii_letters)
    sa = [next(letters) for _ in range(np.ndim(a))]
    sb = [next(letters) for _ in range(np.ndim(b))]
    try:
        for i, j in zip(axes_a, axes_b, strict=True):
            sb[j] = sa[i]
    except (ValueError, IndexError):
        return None
    contracted = {sa[i] for i in axes_a}
    out = [s for s in sa if s not in contracted] + [s for s in sb if s not in contracted]
    if not (isinstance(a, TracedArray) or isinstance(b, TracedArray)):
        return None
    return _contract("".join(sa), "".join(sb), "".join(out), a, b, dtype)


def einsum(subscripts, *operands, dtype, **kwargs):
    """``np.einsum`` of two operands, one constant, that is one ``linear``."""
    if kwargs or len(operands) != 2 or not isinstance(subscripts, str):
        return None
    spec = subscripts.replace(" ", "")
    if "." in spec:
        return None
    inputs, arrow, out = spec.partition("->")
    parts = inputs.split(",")
    if len(parts) != 2:
        return None
    sa, sb = parts
    if not arrow:
        counts = {c: (sa + sb).count(c) for c in sa + sb}
        out = "".join(sorted(c for c, k in counts.items() if k == 1))
    return _contract(sa, sb, out, *operands, dtype)


def _contract(sa, sb, out, a, b, dtype):
    """The contraction ``sa,sb->out`` of a traced and a constant operand as ``linear``:
    the traced operand's axes must read (free before, contracted, free after) and the
    output (free before, the constant's free axes, free after)."""
    TracedArray = _traced_array()
    if isinstance(a, TracedArray) == isinstance(b, TracedArray):
        return None
    (sx, x), (sw, w) = ((sa, a), (sb, b)) if isinstance(a, TracedArray) else ((sb, b), (sa, a))
    W = _constant(w)
    if W is None or len(set(sx)) != len(sx) or len(set(sw)) != len(sw) or len(set(out)) != len(out):
        return None
    if W.ndim != len(sw) or x.ndim != len(sx) or not set(out) <= set(sx) | set(sw):
        return None
    if any(c in out for c in set(sx) & set(sw)):
        return None                    # an index of both kept in the output: not a product
    contracted = [c for c in sx if c in sw]
    wfree = [c for c in sw if c not in sx]
    if not contracted:
        return None
    first = sx.index(contracted[0])
    if sx[first:first + len(contracted)] != "".join(contracted):
        return None
    before, after = sx[:first], sx[first + len(contracted):]
    if out != before + "".join(wfree) + after:
        return None
    dims = dict(zip(sx, x.shape))
    for c, d in zip(sw, W.shape):
        if dims.setdefault(c, d) != d:
            return None
    Wt = np.transpose(W, [sw.index(c) for c in wfree + contracted])
    m = math.prod(dims[c] for c in wfree)
    k = math.prod(dims[c] for c in contracted)
    M = Wt.reshape(m, k)
    if M.size == 0 or x.size == 0 or not _worth_it(x, M):
        return None
    g = math.prod(dims[c] for c in before)
    h = math.prod(dims[c] for c in after)
    shape = tuple(dims[c] for c in out)
    return _linear(x, M, g, h, shape, dtype)


def total(a, axis, keepdims, dtype, mean=False):
    """``np.sum`` (or ``np.mean``) of a block-backed array: ``sum`` over every element,
    ``linear`` with a row of ones over one axis."""
    if not is_block(a):
        return None
    shape = a.shape
    if axis is None:
        axes = tuple(range(a.ndim))
    else:
        axes = tuple(np.atleast_1d(axis))
        if not all(isinstance(ax, (int, np.integer)) and -a.ndim <= ax < a.ndim for ax in axes):
            return None
        axes = tuple(sorted({int(ax) % a.ndim for ax in axes}))
    graph = _graph([a])
    v = graph.operand(a._block)
    if len(axes) == a.ndim:
        node = graph.add("sum", (v,))
        out_shape = (1,) * a.ndim if keepdims else ()
    elif len(axes) == 1:
        (ax,) = axes
        ones = Array(np.ones((1, shape[ax])))
        node = graph.add("linear", (v,), (ones, math.prod(shape[:ax]), math.prod(shape[ax + 1:])))
        out_shape = shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:]
    else:
        return None
    if mean:
        node = graph.add("div", (node, graph.const(float(math.prod(shape[ax] for ax in axes)))))
    return _traced_array()(None, dtype, block=Var(graph, node), shape=out_shape)
