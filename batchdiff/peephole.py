"""Peephole rewrites: constant folding and algebraic identities, node by node.

``rewrite`` is called by ``Graph.add`` for every node before it is made (a pass that
runs as the graph grows), so derivative graphs never hold the structural zeros and
ones of the chain rule: ``x*0``, ``x*1``, ``x+0`` vanish as they appear.

Rules keep IEEE semantics except three: ``x*0 -> 0``, which every AD system takes (it is
what makes structural zeros vanish: a NaN or inf multiplied by a literal zero gives 0);
``x+0 -> x`` and ``0-x -> -x``, which differ from IEEE only in the sign of a zero result
(``-0.0 + 0`` is ``+0.0`` in IEEE, ``-0.0`` here), and
``c1*(c2*x) -> (c1*c2)*x``, which may round differently in the last bit (the chain
rule makes many such products: the gradient of ``3*x**3`` is ``9*x**2``, not ``3*(3*x**2)``).

>>> from batchdiff.graph import Graph
>>> g = Graph()
>>> x = g.input()
>>> g.add("mul", (x, g.const(0.0))) == g.const(0.0)
True
>>> g.add("add", (x, g.const(0.0))) == x     # -0.0 stays -0.0: the sign of a zero sum
True
"""
from __future__ import annotations

import numpy as np

from .blocks import BLOCK_OPS, elementwise_rewrite
from .ops import COMPARISONS, OPS


def rewrite(g, op: str, args: tuple, value=None, size=0):
    """A node equal to ``op(*args)`` found or made without making that node, or None.

    ``value`` is a block op's parameter and ``size`` the result's size; a scalar node
    returned for a block result stands for that value in every element (``Graph.fit``).
    A constant of a block of one value (``broadcast`` of it) takes part in the scalar
    rules as that constant.
    """
    block = BLOCK_OPS.get(op)
    if block is not None:
        return block.rewrite(g, args, value)
    consts = [g.const_value(a) for a in args]
    if all(c is not None for c in consts):
        with np.errstate(all="ignore"):
            folded = OPS[op].value(*(np.float64(c) for c in consts))
        return g.const(folded)
    if size:
        node = elementwise_rewrite(g, op, args, size)
        if node is not None:
            return node
    rule = _RULES.get(op)
    return rule(g, args, consts) if rule else None


def _is(g, node, op):
    return g.instrs[node].op == op


def _scaled(g, node):
    """``(c, x)`` when ``node`` is ``c * x`` with a constant ``c``, else None."""
    ins = g.instrs[node]
    if ins.op == "mul":
        for k in (0, 1):
            value = g.const_value(ins.args[k])
            if value is not None:
                return value, ins.args[1 - k]
    return None


def _add(g, args, c):
    a, b = args
    if c[0] == 0.0:
        return b
    if c[1] == 0.0:
        return a
    if a == b:
        return g.add("mul", (g.const(2.0), a))
    if _is(g, b, "neg"):
        return g.add("sub", (a, g.instrs[b].args[0]))
    if _is(g, a, "neg"):
        return g.add("sub", (b, g.instrs[a].args[0]))
    return None


def _sub(g, args, c):
    a, b = args
    if c[1] == 0.0:
        return a
    if c[0] == 0.0:
        return g.add("neg", (b,))
    if _is(g, b, "neg"):
        return g.add("add", (a, g.instrs[b].args[0]))
    return None


def _mul(g, args, c):
    a, b = args
    for k in (0, 1):
        other = args[1 - k]
        if c[k] == 0.0:
            return g.const(0.0)
        if c[k] == 1.0:
            return other
        if c[k] == -1.0:
            return g.add("neg", (other,))
        if c[k] is not None:
            inner = g.instrs[other]
            if inner.op == "neg":
                return g.add("mul", (g.const(-c[k]), inner.args[0]))
            scaled = _scaled(g, other)
            if scaled is not None:
                return g.add("mul", (g.const(scaled[0] * c[k]), scaled[1]))
    if _is(g, a, "neg") and _is(g, b, "neg"):
        return g.add("mul", (g.instrs[a].args[0], g.instrs[b].args[0]))
    return None


def _div(g, args, c):
    a, b = args
    if c[1] == 1.0:
        return a
    if c[1] == -1.0:
        return g.add("neg", (a,))
    return None


def _neg(g, args, c):
    inner = g.instrs[args[0]]
    if inner.op == "neg":
        return inner.args[0]
    scaled = _scaled(g, args[0])
    if scaled is not None:
        return g.add("mul", (g.const(-scaled[0]), scaled[1]))
    return None


def _pow(g, args, c):
    a, b = args
    if c[1] == 1.0:
        return a
    if c[1] == 0.0:
        return g.const(1.0)
    if c[1] == 2.0:
        return g.add("mul", (a, a))
    if c[1] == -1.0:
        return g.add("div", (g.const(1.0), a))
    return None


def _where(g, args, c):
    cond, a, b = args
    if c[0] is not None:
        return a if c[0] != 0.0 else b
    if a == b:
        return a
    return None


def _ne(g, args, c):
    # ne(comparison, 0) is the comparison itself: conditions from logical_and/or
    for k in (0, 1):
        if c[1 - k] == 0.0 and g.instrs[args[k]].op in COMPARISONS:
            return args[k]
    return None


def _stop(g, args, c):
    return args[0] if _is(g, args[0], "stop") else None


_RULES = {"add": _add, "sub": _sub, "mul": _mul, "div": _div, "neg": _neg,
          "pow": _pow, "where": _where, "ne": _ne, "stop": _stop}
