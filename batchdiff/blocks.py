"""Block instructions: one tape instruction on a vector of values.

The scalar tape is right for small irregular code and wrong for dense linear algebra: a
product with a constant 64 x 64 matrix is 8,192 scalar instructions, and a Hessian
multiplies that by the inputs. So a tape value is either a scalar (``Instr.size == 0``)
or a *block* of ``size`` values, and a block is made and read by the structural ops
below:

- ``pack(x0, ..., xn-1)``: scalars into a block of n;
- ``index[k](v)``: element k of a block, a scalar;
- ``sum(v)``: the sum of a block's elements, in order, a scalar;
- ``broadcast[n](x)``: a scalar repeated n times (a block of one constant value is
  ``broadcast`` of that constant, so its value stays visible to the rewrites);
- ``linear[W, g, h](v)``: ``v`` seen as a ``(g, k, h)`` array, ``W`` a constant ``m x k``
  matrix, out ``(g, m, h)`` with ``out[a, r, b] = sum_c W[r, c] v[a, c, b]``: ``W @ x``
  (g = h = 1), ``x @ W`` (``W.T``), ``X @ W`` for a traced matrix X (g its rows), and a
  sum over one axis (W a row of ones).

Every elementwise op of ``ops.OPS`` also runs on blocks, a block and scalars (the scalars
broadcast): ``tanh`` of a block is one instruction. A block constant (a bias vector) is a
``const`` instruction whose value is an ``Array``.

Each entry of ``BLOCK_OPS`` holds what the rest of the package knows of the op, side by
side: its result's size, its value rule on a batch (NumPy, the reference interpreter's),
its tangent (forward) and transpose (reverse) rules (the ops are linear), its scalar
expansion (``expand``: the same tape with every block unrolled, CasADi's ``expand()``)
and its rewrites. The executors run the ops their own way.

>>> import numpy as np, batchdiff as bd
>>> W = np.arange(128.0).reshape(32, 4) / 128
>>> print(bd.grad(lambda x: np.sum(np.tanh(W @ x))).tape(np.ones((1, 4))))
... # doctest: +ELLIPSIS
tape: 4 inputs, 10 ops, 4 outputs
...
  %4 = pack(%0, %1, %2, %3)  : [4]
  %5 = linear[32x4](%4)  : [32]
  %6 = tanh(%5)  : [32]
  %7 = const 1.0
  %8 = mul(%6, %6)  : [32]
  %9 = sub(%7, %8)  : [32]
  %10 = linear[4x32](%9)  : [4]
  %11 = index[0](%10)
...
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .ops import OPS


class Array:
    """A constant array held by a tape instruction: read-only, compared and hashed by content.

    >>> a = Array([1.0, 2.0])
    >>> a == Array(np.array([1.0, 2.0])), hash(a) == hash(Array([1.0, 2.0])), a
    (True, True, Array(2))
    """
    __slots__ = ("array", "_key", "_hash")

    def __init__(self, values):
        array = np.array(values, dtype=np.float64)
        array.flags.writeable = False
        self.array = array
        self._key = (array.shape, array.tobytes())
        self._hash = hash(self._key)

    @property
    def size(self) -> int:
        return int(self.array.size)

    @property
    def shape(self) -> tuple:
        return self.array.shape

    def __eq__(self, other):
        return isinstance(other, Array) and (self is other or self._key == other._key)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"Array({'x'.join(map(str, self.array.shape))})"

    def __reduce__(self):
        return Array, (self.array,)


def uniform(values: np.ndarray):
    """The value of every element if they are all the same bits, else None.

    >>> uniform(np.array([0.5, 0.5])), uniform(np.array([0.0, -0.0]))
    (0.5, None)
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        return None
    bits = flat.view(np.int64)
    return float(flat[0]) if bool(np.all(bits == bits[0])) else None


# -- the value rules: a scalar is a 0-d value or a row (chunk,), a block (n, 1) or (n, chunk)

def _rows(x):
    """A value as the rows of a block: ``(1, c)`` for a scalar."""
    return np.reshape(x, (1, -1))


def _pack_value(args, value, dtype):
    width = max(np.size(a) for a in args)
    out = np.empty((len(args), width), dtype=dtype)
    for r, a in enumerate(args):
        out[r] = a
    return out


def _linear_value(args, value, dtype):
    (v,) = args
    W, g, h = value
    m, k = W.shape
    width = np.shape(v)[-1]
    # (g, k, h * width): W times each group's rows, one BLAS product per group
    out = np.matmul(W.array.astype(dtype), np.reshape(v, (g, k, h * width)))
    return out.reshape(g * m * h, width)


def _sum_value(args, value, dtype):
    (v,) = args
    total = v[0].copy()
    for r in range(1, v.shape[0]):     # in order, as every executor adds
        total = total + v[r]
    return total


# -- sizes ---------------------------------------------------------------------------

def _linear_size(sizes, value):
    W, g, h = value
    m, k = W.shape
    if sizes[0] != g * k * h:
        raise ValueError(f"linear[{m}x{k}] with g={g}, h={h} takes a block of {g * k * h}, "
                         f"not {sizes[0]}")
    return g * m * h


def _index_size(sizes, value):
    if not 0 <= value < max(sizes[0], 1):
        raise IndexError(f"index {value} of a block of {sizes[0]}")
    return 0


# -- tangents (forward mode); a tangent None is a structural zero ------------------------

def _zero_or(g, t):
    return g.const(0.0) if t is None else t


def _pack_jvp(g, tangents, value):
    if all(t is None for t in tangents):
        return None
    return g.add("pack", tuple(_zero_or(g, t) for t in tangents))


def _same_op_jvp(name):
    def jvp(g, tangents, value):
        (t,) = tangents
        return None if t is None else g.add(name, (t,), value)
    return jvp


# -- transposes (reverse mode): the cotangent of each argument, a dict {k: node} for the
#    elements of a block that only some are given (index), None for a zero --------------

def _pack_transpose(g, ct, sizes, value):
    return [g.add("index", (ct,), r) for r in range(len(sizes))]


def _index_transpose(g, ct, sizes, value):
    return [{value: ct}]


def _sum_transpose(g, ct, sizes, value):
    return [g.add("broadcast", (ct,), sizes[0])]


def _broadcast_transpose(g, ct, sizes, value):
    return [g.add("sum", (ct,))]


def _linear_transpose(g, ct, sizes, value):
    W, grp, h = value
    return [g.add("linear", (ct,), (Array(W.array.T), grp, h))]


# -- expansion into scalars -----------------------------------------------------------

def _linear_expand(g, elements, value):
    (x,) = elements
    W, grp, h = value
    m, k = W.shape
    out = []
    for a in range(grp):
        for r in range(m):
            for b in range(h):
                acc = None
                for c in range(k):
                    w = float(W.array[r, c])
                    if w == 0.0:
                        continue
                    term = g.add("mul", (g.const(w), x[(a * k + c) * h + b]))
                    acc = term if acc is None else g.add("add", (acc, term))
                out.append(g.const(0.0) if acc is None else acc)
    return out


def _sum_expand(g, elements, value):
    (x,) = elements
    return [functools.reduce(lambda acc, e: g.add("add", (acc, e)), x[1:], x[0])]


# -- rewrites: a node equal to the op's result, found or made, or None -------------------

def _pack_rewrite(g, args, value):
    if all(a == args[0] for a in args):
        return g.add("broadcast", (args[0],), len(args))
    consts = [g.const_value(a) for a in args]
    if all(c is not None for c in consts):
        return g.const(np.array(consts))
    ins = [g.instrs[a] for a in args]
    if all(i.op == "index" and i.args == ins[0].args and i.value == r for r, i in enumerate(ins)):
        source = ins[0].args[0]
        if g.instrs[source].size == len(args):
            return source
    return None


def _index_rewrite(g, args, value):
    src = g.instrs[args[0]]
    if src.op == "pack":
        return src.args[value]
    if src.op == "broadcast":
        return src.args[0]
    if src.is_const:
        return g.const(src.value.array.ravel()[value])
    return None


def _sum_rewrite(g, args, value):
    src = g.instrs[args[0]]
    if src.op == "broadcast":
        return g.add("mul", (g.const(float(src.value)), src.args[0]))
    block = g.block_value(args[0])
    if block is not None:
        return g.const(_sum_value([block[:, None]], None, np.float64)[0])
    return None


def _linear_rewrite(g, args, value):
    block = g.block_value(args[0])
    if block is None:
        return None
    W, grp, h = value
    if not np.any(block):
        return g.const(0.0)           # fitted to the result's size by Graph.add
    return g.const(_linear_value([block[:, None]], value, np.float64).ravel())


@dataclass(frozen=True)
class BlockOp:
    """What the package knows of one block op (see the module docstring).

    ``size(arg_sizes, value)``: the result's size (0: a scalar); ``value(args, value,
    dtype)``: the result on a chunk of points (a scalar is a 0-d value or a row, a block
    an ``(n, 1)`` or ``(n, chunk)`` array); ``jvp(g, tangents, value)``: the result's
    tangent node from its arguments' (None: zero); ``transpose(g, cotangent, arg_sizes,
    value)``: per argument its cotangent (a node, a dict ``{element: node}``, or None);
    ``expand(g, elements, value)``: the result's scalar nodes from the arguments'
    (lists of scalar nodes); ``rewrite(g, args, value)``: an equal node, or None.
    """
    name: str
    size: Callable
    value: Callable
    jvp: Callable
    transpose: Callable
    expand: Callable
    rewrite: Callable


BLOCK_OPS: dict[str, BlockOp] = {}


def _block_op(name, size, value, jvp, transpose, expand, rewrite):
    BLOCK_OPS[name] = BlockOp(name, size, value, jvp, transpose, expand, rewrite)


_block_op("pack", lambda sizes, value: len(sizes), _pack_value, _pack_jvp, _pack_transpose,
          lambda g, elements, value: [e[0] for e in elements], _pack_rewrite)
_block_op("index", _index_size, lambda args, value, dtype: args[0][value],
          _same_op_jvp("index"), _index_transpose,
          lambda g, elements, value: [elements[0][value]], _index_rewrite)
_block_op("sum", lambda sizes, value: 0, _sum_value, _same_op_jvp("sum"), _sum_transpose,
          _sum_expand, _sum_rewrite)
_block_op("broadcast", lambda sizes, value: int(value),
          lambda args, value, dtype: np.broadcast_to(_rows(args[0]), (value, np.size(args[0]))),
          _same_op_jvp("broadcast"), _broadcast_transpose,
          lambda g, elements, value: elements[0] * value, lambda g, args, value: None)
_block_op("linear", _linear_size, _linear_value, _same_op_jvp("linear"), _linear_transpose,
          _linear_expand, _linear_rewrite)


def elementwise_size(op: str, sizes) -> int:
    """The size of elementwise ``op`` on arguments of ``sizes``: the blocks' (all equal)."""
    blocks = {s for s in sizes if s}
    if len(blocks) > 1:
        raise ValueError(f"{op} of blocks of different sizes {sorted(blocks)}")
    return blocks.pop() if blocks else 0


def elementwise_rewrite(g, op, args, size):
    """Rewrites of elementwise ``op`` on a block: all constant (folded into a block
    constant), or every block a ``broadcast`` (the op on the scalars, broadcast)."""
    values = [g.block_value(a) for a in args]
    if all(v is not None for v in values):
        with np.errstate(all="ignore"):
            result = OPS[op].value(*(np.broadcast_to(v, (size,)) for v in values))
        return g.const(np.asarray(result, dtype=np.float64))
    scalars = []
    for a in args:
        ins = g.instrs[a]
        if ins.size and ins.op != "broadcast":
            return None
        scalars.append(ins.args[0] if ins.size else a)
    return g.add(op, tuple(scalars))


def expand(tape):
    """The same program with every block unrolled into scalar instructions.

    Blocks' values and derivatives are the expansion's, up to the order of sums; the
    tests hold every executor's blocks against it.

    >>> import numpy as np, batchdiff as bd
    >>> W = np.arange(128.0).reshape(32, 4) / 128
    >>> tape = bd.grad(lambda x: np.sum(np.tanh(W @ x))).tape(np.ones((1, 4)))
    >>> tape.num_ops, expand(tape).num_ops
    (10, 568)
    """
    from .graph import Graph

    g = Graph()
    inputs = [g.input() for _ in range(tape.n_inputs)]
    elements: list = [None] * len(tape.instrs)
    for i, ins in enumerate(tape.instrs):
        if ins.is_input:
            elements[i] = [inputs[ins.value]]
        elif ins.is_const:
            values = ins.value.array.ravel() if isinstance(ins.value, Array) else [ins.value]
            elements[i] = [g.const(float(v)) for v in values]
        elif ins.op in BLOCK_OPS:
            elements[i] = BLOCK_OPS[ins.op].expand(g, [elements[a] for a in ins.args], ins.value)
        else:
            n = max(ins.size, 1)
            parts = [elements[a] for a in ins.args]
            elements[i] = [g.add(ins.op, tuple(p[r] if len(p) > 1 else p[0] for p in parts))
                           for r in range(n)]
    return g.finish([elements[o][0] for o in tape.outputs])


def has_blocks(tape) -> bool:
    """Whether ``tape`` holds a block instruction."""
    return any(ins.size or ins.op in BLOCK_OPS for ins in tape.instrs)

