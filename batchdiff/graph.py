"""The SSA tape and the hash-consing builder that makes it.

A ``Tape`` is a straight-line program: a tuple of ``Instr`` (op name, argument
positions, a value for inputs, constants and the static parameter of a block op, and
the size of its result: 0 for a scalar, n for a block of n values, ``blocks.py``), a
tuple of output positions (scalars), and the number of inputs (scalars), which always
come first. It is frozen, hashable and printable.

A ``Graph`` builds tapes. Every node is hash-consed (the same op on the same arguments
is the same node, so common subexpressions are shared for free) and passes through
``peephole.rewrite`` (constant folding and algebraic identities) before it is made.
``Var`` is a handle on one node whose Python operators build new nodes; the tracer
wraps arrays of them, and the derivative rules in ``ops.py`` are written with them.
"""
from __future__ import annotations

import collections
import functools
import struct
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import peephole
from .blocks import BLOCK_OPS, Array, elementwise_size, uniform
from .errors import LeakedTracerError, TracerConversionError
from .ops import OPS


INPUT, CONST = "input", "const"     # the two ops that compute nothing
PRODUCT_COST = 0.25                 # a matrix product's multiply-add, in instructions


class Instr(NamedTuple):
    """One tape instruction: ``op(args)``, an input (``value``: its index) or a constant.

    >>> Instr(CONST, (), 2.5).is_const, Instr("sin", (0,)).is_op
    (True, True)
    """
    op: str                       # INPUT, CONST, a key of ops.OPS or of blocks.BLOCK_OPS
    args: tuple                   # positions of earlier instructions
    value: object = None          # constant value (a float, or a blocks.Array for a block
    #                               constant), input index, or a block op's parameter
    size: int = 0                 # 0: a scalar; n: a block of n values

    @property
    def is_block(self) -> bool:
        """Whether it is a block op (``blocks.BLOCK_OPS``) or an op on blocks."""
        return self.size != 0 or self.op in BLOCK_OPS

    @property
    def is_input(self) -> bool:
        return self.op == INPUT

    @property
    def is_const(self) -> bool:
        return self.op == CONST

    @property
    def is_op(self) -> bool:
        """Whether it computes something (neither an input nor a constant)."""
        return self.op != INPUT and self.op != CONST


@dataclass(frozen=True)
class Tape:
    """A straight-line scalar program; inputs are instructions ``0 .. n_inputs-1``.

    >>> import batchdiff as bd, numpy as np
    >>> print(bd.grad(lambda v: v[0] * v[1]).tape(np.ones((1, 2))))
    tape: 2 inputs, 0 ops, 2 outputs
      %0 = input 0
      %1 = input 1
      out[0] = %1
      out[1] = %0
    """
    instrs: tuple
    outputs: tuple
    n_inputs: int

    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        """The dataclass's hash, computed once: a tape keys the kernel and timing tables,
        looked up several times per call, and hashing 14,000 instructions takes 0.5 ms."""
        return hash((self.instrs, self.outputs, self.n_inputs))

    @functools.cached_property
    def num_ops(self) -> int:
        """Instructions that compute something (not inputs, not constants); counted once
        (executors ask on every call)."""
        return sum(1 for ins in self.instrs if ins.is_op)

    @functools.cached_property
    def op_counts(self) -> collections.Counter:
        """How many instructions of each op (``{"add": 12, "sin": 3, ...}``); counted once."""
        return collections.Counter(ins.op for ins in self.instrs if ins.is_op)

    def ops(self) -> list:
        """Positions of the instructions that compute something, in order."""
        return [i for i, ins in enumerate(self.instrs) if ins.is_op]

    def is_op(self, i) -> bool:
        """Whether instruction ``i`` computes something (neither input nor constant)."""
        return self.instrs[i].is_op

    def is_input(self, i) -> bool:
        return self.instrs[i].is_input

    def const_value(self, i):
        """The value of instruction ``i`` if it is a scalar constant, else None."""
        ins = self.instrs[i]
        return ins.value if ins.is_const and not ins.size else None

    @functools.cached_property
    def work(self) -> tuple:
        """``(element_ops, multiply_adds)`` per point: each scalar op counts one element
        op, an op on a block of n values n, ``sum`` and ``pack`` their n; a ``linear``
        counts its multiply-adds (``g * h * m * k``), whose cost per operation differs."""
        elements = products = 0
        for ins in self.instrs:
            if not ins.is_op:
                continue
            if ins.op == "linear":
                W, g, h = ins.value
                products += g * h * W.size
            elif ins.op in ("sum", "index"):
                elements += max(self.instrs[ins.args[0]].size, 1) if ins.op == "sum" else 1
            else:
                elements += max(ins.size, 1)
        return elements, products

    @functools.cached_property
    def cost(self) -> float:
        """``work`` in scalar instructions per point, a block's multiply-add counted as
        ``PRODUCT_COST`` of one (vectorised, a register-blocked loop); for a tape without
        blocks, ``num_ops``. The AD modes are chosen by it."""
        elements, products = self.work
        return elements + PRODUCT_COST * products

    @functools.cached_property
    def has_blocks(self) -> bool:
        """Whether any instruction is a block op or an op on blocks."""
        return any(ins.is_block for ins in self.instrs)

    def __len__(self):
        return len(self.instrs)

    def last_uses(self) -> list:
        """For each instruction, the last instruction reading it (outputs: ``len(self)``)."""
        end = len(self.instrs)
        last = list(range(end))
        for i, ins in enumerate(self.instrs):
            for a in ins.args:
                last[a] = i
        for o in self.outputs:
            last[o] = end
        return last

    def __str__(self):
        lines = [f"tape: {self.n_inputs} inputs, {self.num_ops} ops, {len(self.outputs)} outputs"]
        for i, ins in enumerate(self.instrs):
            if not ins.is_op:
                line = f"  %{i} = {ins.op} {ins.value!r}"
            else:
                line = f"  %{i} = {ins.op}{_parameter(ins)}({', '.join(f'%{a}' for a in ins.args)})"
            lines.append(line + (f"  : [{ins.size}]" if ins.size else ""))
        lines.extend(f"  out[{k}] = %{o}" for k, o in enumerate(self.outputs))
        return "\n".join(lines)

    def __repr__(self):
        return f"<Tape {self.n_inputs} inputs, {self.num_ops} ops, {len(self.outputs)} outputs>"


def _parameter(ins) -> str:
    """A block op's parameter as the tape prints it: ``[64x64]``, ``[3]``."""
    if ins.value is None:
        return ""
    if ins.op == "linear":
        W, g, h = ins.value
        groups = "".join(f", {k}={v}" for k, v in (("g", g), ("h", h)) if v != 1)
        return f"[{W.shape[0]}x{W.shape[1]}{groups}]"
    return f"[{ins.value}]"


_state = threading.local()


def active_graphs() -> list:
    """The graphs being traced in this thread, outermost first."""
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


class Graph:
    """A mutable, hash-consed builder of one tape."""

    def __init__(self):
        self.instrs: list[Instr] = []
        self._index: dict = {}
        self.n_inputs = 0
        self.captured: list[Var] = []   # Vars of enclosing traces used here, as extra inputs
        self._capture_index: dict = {}

    # -- context ----------------------------------------------------------------------
    def __enter__(self):
        active_graphs().append(self)
        return self

    def __exit__(self, *exc):
        active_graphs().remove(self)

    @property
    def depth(self) -> int:
        stack = active_graphs()
        return stack.index(self) if self in stack else -1

    # -- making nodes -----------------------------------------------------------------
    def _intern(self, key, instr) -> int:
        node = self._index.get(key)
        if node is None:
            node = len(self.instrs)
            self.instrs.append(instr)
            self._index[key] = node
        return node

    def input(self) -> int:
        k = self.n_inputs
        self.n_inputs += 1
        return self._intern((INPUT, k), Instr(INPUT, (), k))

    def const(self, value) -> int:
        """A constant node: a number (a 0-d array too), or an array of one dimension or
        more, a block constant (flattened; one of a single value is ``broadcast`` of it)."""
        if isinstance(value, Array) or isinstance(value, np.ndarray) and value.ndim:
            array = value if isinstance(value, Array) else Array(np.ravel(value))
            same = uniform(array.array)
            if same is not None:
                return self.add("broadcast", (self.const(same),), array.size)
            return self._intern((CONST, array), Instr(CONST, (), array, array.size))
        v = float(value)
        return self._intern((CONST, struct.pack("<d", v)), Instr(CONST, (), v))

    def const_value(self, node: int):
        """The value of ``node`` if it is a scalar constant or a block of one constant
        value (``broadcast`` of a constant), else None."""
        ins = self.instrs[node]
        if ins.op == "broadcast":
            ins = self.instrs[ins.args[0]]
        return ins.value if ins.is_const and not ins.size else None

    def block_value(self, node: int):
        """The values of ``node`` as a flat float64 array if it is constant, else None."""
        ins = self.instrs[node]
        if ins.is_const:
            return ins.value.array.ravel() if ins.size else np.array([ins.value])
        value = self.const_value(node)
        return None if value is None else np.full(max(ins.size, 1), value)

    def size(self, node: int) -> int:
        """0 for a scalar node, n for a block of n values."""
        return self.instrs[node].size

    def add(self, op: str, args: tuple, value=None) -> int:
        """Node ``op(*args)`` after folding and identities; existing node if seen before.

        ``value`` is a block op's parameter (``blocks.BLOCK_OPS``). A rewrite that gives
        a scalar where the op makes a block is broadcast to the block's size.
        """
        sizes = [self.instrs[a].size for a in args]
        block = BLOCK_OPS.get(op)
        if block is None:
            if OPS[op].commutative and args[0] > args[1]:
                args = (args[1], args[0])
            size = elementwise_size(op, sizes)
        else:
            size = block.size(sizes, value)
        node = peephole.rewrite(self, op, args, value, size)
        if node is not None:
            return self.fit(node, size)
        key = (op, args) if value is None else (op, args, value)
        return self._intern(key, Instr(op, args, value, size))

    def fit(self, node: int, size: int) -> int:
        """``node`` as a value of ``size``: a scalar is broadcast to a block."""
        have = self.instrs[node].size
        if have == size:
            return node
        if have == 0:
            return self.add("broadcast", (node,), size)
        raise ValueError(f"a block of {have} where a value of size {size} is needed")

    def operand(self, x) -> int:
        """The node for ``x``: a Var of this graph, a Var of an enclosing trace, or a number."""
        if isinstance(x, Var):
            if x.graph is self:
                return x.id
            return self._capture(x)
        if isinstance(x, (bool, int, float)) or _is_real_scalar(x):
            return self.const(x)
        raise TypeError(f"cannot use {type(x).__name__} {x!r} in a traced computation")

    def _capture(self, var) -> int:
        outer = var.graph.depth
        if outer < 0 or outer >= self.depth:
            raise LeakedTracerError(
                "a traced value was used outside the function call that traced it "
                "(it was stored in a global or a closure and escaped); return it instead")
        key = (id(var.graph), var.id)
        node = self._capture_index.get(key)
        if node is None:
            if var.size:          # a block: its elements come in, packed again here
                outer = var.graph
                node = self.add("pack", tuple(
                    self._capture(Var(outer, outer.add("index", (var.id,), k)))
                    for k in range(var.size)))
            else:
                node = self.input()
                self.captured.append(var)
            self._capture_index[key] = node
        return node

    def apply(self, op: str, args, value=None) -> Var:
        return apply(op, args, value)

    # -- finishing --------------------------------------------------------------------
    def finish(self, outputs) -> Tape:
        """Freeze into a ``Tape``: dead code removed, inputs first (in input order)."""
        return compact(self.instrs, outputs, self.n_inputs)


def compact(instrs, outputs, n_inputs) -> Tape:
    """Dead-code elimination and renumbering; inputs are kept even when unused."""
    live = [False] * len(instrs)
    for o in outputs:
        live[o] = True
    for i in range(len(instrs) - 1, -1, -1):
        if live[i]:
            for a in instrs[i].args:
                live[a] = True
    inputs = sorted((ins.value, i) for i, ins in enumerate(instrs) if ins.is_input)
    order = [i for _, i in inputs] + [
        i for i, ins in enumerate(instrs) if live[i] and not ins.is_input]
    new = {old: k for k, old in enumerate(order)}
    out_instrs = tuple(instrs[i]._replace(args=tuple(new[a] for a in instrs[i].args))
                       for i in order)
    return Tape(out_instrs, tuple(new[o] for o in outputs), n_inputs)


def replay(graph: Graph, tape: Tape, inputs) -> list[int]:
    """Rebuild ``tape`` inside ``graph`` with its inputs bound to nodes ``inputs``.

    Returns the node of every tape instruction. Rewrites and CSE apply again, so
    replaying with some inputs bound to constants specialises the program.
    """
    vals: list[int] = [0] * len(tape.instrs)
    for i, ins in enumerate(tape.instrs):
        if ins.is_input:
            vals[i] = inputs[ins.value]
        elif ins.is_const:
            vals[i] = graph.const(ins.value)
        else:
            vals[i] = graph.add(ins.op, tuple(vals[a] for a in ins.args), ins.value)
    return vals


def _is_real_scalar(x) -> bool:
    import numpy as np
    return isinstance(x, np.generic) and (
        np.issubdtype(type(x), np.floating) or np.issubdtype(type(x), np.integer)
        or isinstance(x, np.bool_))


def apply(op: str, args, value=None) -> Var:
    """``op(*args)`` as a Var in the innermost graph among the Vars in ``args``."""
    graph = None
    for a in args:
        if isinstance(a, Var) and (graph is None or (
                a.graph is not graph and a.graph.depth > graph.depth)):
            graph = a.graph
    if graph is None:
        raise TypeError(f"{op} needs at least one traced argument")
    return Var(graph, graph.add(op, tuple(graph.operand(a) for a in args), value))


class Var:
    """A handle on one node (a scalar or a block); Python arithmetic on it builds the graph."""
    __slots__ = ("graph", "id")
    __hash__ = None  # == builds a node, so Vars are not hashable

    def __init__(self, graph: Graph, node: int):
        self.graph = graph
        self.id = node

    @property
    def size(self) -> int:
        """0 for a scalar, n for a block of n values."""
        return self.graph.instrs[self.id].size

    def __repr__(self):
        return f"Var(%{self.id})" if not self.size else f"Var(%{self.id}: [{self.size}])"

    def __add__(self, o): return apply("add", (self, o))
    def __radd__(self, o): return apply("add", (o, self))
    def __sub__(self, o): return apply("sub", (self, o))
    def __rsub__(self, o): return apply("sub", (o, self))
    def __mul__(self, o): return apply("mul", (self, o))
    def __rmul__(self, o): return apply("mul", (o, self))
    def __truediv__(self, o): return apply("div", (self, o))
    def __rtruediv__(self, o): return apply("div", (o, self))
    def __pow__(self, o): return apply("pow", (self, o))
    def __rpow__(self, o): return apply("pow", (o, self))
    def __neg__(self): return apply("neg", (self,))
    def __pos__(self): return self
    def __abs__(self): return apply("abs", (self,))
    def __lt__(self, o): return apply("lt", (self, o))
    def __le__(self, o): return apply("le", (self, o))
    def __gt__(self, o): return apply("gt", (self, o))
    def __ge__(self, o): return apply("ge", (self, o))
    def __eq__(self, o): return apply("eq", (self, o))
    def __ne__(self, o): return apply("ne", (self, o))

    def __bool__(self):
        raise TracerConversionError(
            "a traced value has no truth value while batchdiff traces your function "
            "(Python `if`, `and`, `or`, `while` on it): branch with np.where(cond, a, b) instead")

    def __float__(self):
        raise TracerConversionError(
            "float() of a traced value: it has no number while batchdiff traces your function. "
            "If you are filling a NumPy array, build the result with np.stack([...]) or "
            "bd.numpy.array([...]) instead of assigning into np.zeros(...)")

    __int__ = __index__ = __complex__ = __float__
