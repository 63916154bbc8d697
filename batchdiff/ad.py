"""Automatic differentiation as tape-to-tape transforms.

Two sweeps do all the work, both from the local partials in ``ops.py``:

- ``forward``: dual numbers. Every node carries a tangent for each of k directions;
  a node's tangent is the sum of its partials times its arguments' tangents.
- ``reverse``: the adjoint sweep. Walking the tape backwards, every node passes its
  adjoint times each partial on to its arguments.

A missing tangent or adjoint is a structural zero (``None``) and costs nothing; the
builder's rewrites remove the zeros and ones the chain rule makes. Block instructions
(``blocks.py``) are linear: their tangents and adjoints come from their own rules
(``BlockOp.jvp``, ``BlockOp.transpose``), and an elementwise op on blocks uses its
partials as a scalar op does, on whole blocks. A tangent or adjoint has the size of its
node: a scalar contribution to a block is broadcast, a block's to a scalar summed. On top of the
sweeps, each ``*_tape`` function below maps a tape to a new tape (JVP, VJP, Jacobian,
Hessian, HVP), so transforms compose: a Hessian is a forward-mode Jacobian of a
Jacobian, and a third derivative is a Jacobian of that.
"""
from __future__ import annotations

from .blocks import BLOCK_OPS
from .graph import Graph, Tape, Var, replay
from .ops import OPS

MODES = ("auto", "forward", "reverse")


class _Partials:
    """Local partials of each tape instruction, made in ``g`` once, on first use."""

    def __init__(self, g: Graph, tape: Tape, vals):
        self.g, self.tape, self.vals = g, tape, vals
        self._cache: dict[int, tuple] = {}

    def __getitem__(self, i: int) -> tuple:
        ps = self._cache.get(i)
        if ps is None:
            g, ins = self.g, self.tape.instrs[i]
            args = [Var(g, self.vals[a]) for a in ins.args]
            raw = OPS[ins.op].partials(*args, Var(g, self.vals[i]))
            ps = tuple(None if p is None else g.operand(p) for p in raw)
            self._cache[i] = ps
        return ps


def _accumulate(g: Graph, acc, term):
    if term is None or g.const_value(term) == 0.0:
        return acc
    return term if acc is None else g.add("add", (acc, term))


def _sized(g: Graph, node, size):
    """``node`` as a contribution to a value of ``size``: a block's contribution to a
    scalar (broadcast in the op) is its sum; a scalar's to a block, broadcast."""
    if node is None or g.size(node) == size:
        return node
    if size == 0:
        return g.add("sum", (node,))
    return g.fit(node, size)


def _gather(g: Graph, adj, size):
    """An adjoint as one node: ``adj`` is a node, a dict ``{element: node}`` of a block's
    elements (the transpose of ``index``), or a pair of both."""
    if not isinstance(adj, tuple):
        return adj
    node, elements = adj
    if elements:
        zero = g.const(0.0)
        node = _accumulate(g, node, g.add("pack", tuple(elements.get(k, zero)
                                                        for k in range(size))))
    return node


def _add_adjoint(g: Graph, adj: dict, arg, term):
    """Add ``term`` (a node, or a dict of elements of a block) to ``arg``'s adjoint."""
    if term is None:
        return
    if not isinstance(term, dict):
        old = adj.get(arg)
        if isinstance(old, tuple):
            adj[arg] = (_accumulate(g, old[0], term), old[1])
        else:
            adj[arg] = _accumulate(g, old, term)
        return
    old = adj.get(arg)
    node, elements = old if isinstance(old, tuple) else (old, {})
    elements = dict(elements)
    for k, t in term.items():
        elements[k] = _accumulate(g, elements.get(k), t)
    adj[arg] = (node, elements)


def forward(g: Graph, tape: Tape, vals, seeds) -> list[list]:
    """Tangents of ``tape``'s outputs in each direction.

    ``vals`` are the nodes of the tape's instructions in ``g`` (from ``replay``);
    ``seeds[d]`` maps an input index to the node of its tangent in direction ``d``.
    Returns ``t[d][j]``: the tangent node of output ``j`` (None for a zero).
    """
    n_dir = len(seeds)
    partials = _Partials(g, tape, vals)
    tan: list = [None] * len(tape.instrs)
    for i, ins in enumerate(tape.instrs):
        if ins.is_input:
            t = [s.get(ins.value) for s in seeds]
            tan[i] = t if any(x is not None for x in t) else None
            continue
        arg_tans = [tan[a] for a in ins.args]
        if ins.is_const or all(t is None for t in arg_tans):
            continue
        block = BLOCK_OPS.get(ins.op)
        out = []
        if block is not None:
            for d in range(n_dir):
                out.append(block.jvp(g, [None if t is None else t[d] for t in arg_tans],
                                     ins.value))
        else:
            ps = partials[i]
            for d in range(n_dir):
                acc = None
                for p, t in zip(ps, arg_tans):
                    if p is not None and t is not None and t[d] is not None:
                        acc = _accumulate(g, acc, g.add("mul", (p, t[d])))
                out.append(_sized(g, acc, ins.size))
        tan[i] = out if any(x is not None for x in out) else None
    return [[tan[o][d] if tan[o] is not None else None for o in tape.outputs]
            for d in range(n_dir)]


def reverse(g: Graph, tape: Tape, vals, cotangents) -> list[list]:
    """Adjoints of ``tape``'s inputs, one sweep per cotangent.

    ``cotangents[s]`` maps an output position to the node of its cotangent in sweep
    ``s``. Returns ``a[s][k]``: the adjoint node of input ``k`` (None for a zero).
    Partials are shared between sweeps.
    """
    partials = _Partials(g, tape, vals)
    results = []
    for cot in cotangents:
        adj: dict = {}
        for j, node in cot.items():
            o = tape.outputs[j]
            adj[o] = _accumulate(g, adj.get(o), node)
        for i in range(len(tape.instrs) - 1, tape.n_inputs - 1, -1):
            ins = tape.instrs[i]
            a = _gather(g, adj.pop(i, None), ins.size)
            if a is None or ins.is_const:
                continue
            block = BLOCK_OPS.get(ins.op)
            if block is not None:
                sizes = [tape.instrs[arg].size for arg in ins.args]
                for arg, term in zip(ins.args, block.transpose(g, a, sizes, ins.value)):
                    _add_adjoint(g, adj, arg, term)
                continue
            for arg, p in zip(ins.args, partials[i]):
                if p is not None:
                    term = _sized(g, g.add("mul", (a, p)), tape.instrs[arg].size)
                    _add_adjoint(g, adj, arg, term)
        results.append([adj.get(k) for k in range(tape.n_inputs)])
    return results


def _start(tape: Tape, n_extra: int = 0):
    """A fresh graph holding ``tape``'s inputs, ``n_extra`` more inputs, and its body."""
    g = Graph()
    xs = [g.input() for _ in range(tape.n_inputs)]
    extra = [g.input() for _ in range(n_extra)]
    return g, replay(g, tape, xs), extra


def _zero_if_none(g: Graph, node):
    return g.const(0.0) if node is None else node


def _jacobian_nodes(g, tape, vals, wrt, mode):
    """Nodes J[j][a] = d out_j / d input wrt[a] in ``g``."""
    one = g.const(1.0)
    m = len(tape.outputs)
    if mode == "forward":
        tans = forward(g, tape, vals, [{k: one} for k in wrt])
        return [[tans[a][j] for a in range(len(wrt))] for j in range(m)]
    adjs = reverse(g, tape, vals, [{j: one} for j in range(m)])
    return [[adjs[j][k] for k in wrt] for j in range(m)]


def jacobian_tape(tape: Tape, wrt, mode: str = "auto", with_value: bool = False) -> Tape:
    """Tape whose outputs are the Jacobian, row-major: out j, then input ``wrt[a]``.

    ``mode`` "forward" uses one tangent direction per input in ``wrt``, "reverse" one
    adjoint sweep per output, "auto" builds both and keeps the one that costs less
    (``Tape.cost``: the fewer ops, without blocks).
    With ``with_value`` the original outputs come first.
    """
    if mode == "auto":
        return smallest(jacobian_tape(tape, wrt, m, with_value) for m in ("forward", "reverse"))
    g, vals, _ = _start(tape)
    jac = _jacobian_nodes(g, tape, vals, wrt, mode)
    outs = [vals[o] for o in tape.outputs] if with_value else []
    outs += [_zero_if_none(g, x) for row in jac for x in row]
    return g.finish(outs)


def hessian_tape(tape: Tape, wrt, mode: str = "auto", with_value: bool = False,
                 with_gradient: bool = False) -> tuple[Tape, dict]:
    """Second derivatives of every output, upper triangle only.

    Returns ``(tape, index)`` where ``index[(j, a, b)]`` (a <= b) is the output position
    of d² out_j / d wrt[a] d wrt[b]. The inner Jacobian is taken in ``mode`` (forward:
    hyper-dual numbers; reverse: forward-over-reverse), the outer one in forward mode
    with one direction per input; entries below the diagonal are never output, so dead
    code elimination drops the work only they need.

    With ``with_value`` the original outputs come first, then with ``with_gradient`` the
    Jacobian (row-major, as ``jacobian_tape``), then the second derivatives: the value
    and first derivatives are nodes the second derivatives compute anyway.
    """
    if mode == "auto":
        return min((hessian_tape(tape, wrt, m, with_value, with_gradient)
                    for m in ("forward", "reverse")), key=lambda r: r[0].cost)
    inner = jacobian_tape(tape, wrt, mode, with_value=True)
    g, vals, _ = _start(inner)
    one = g.const(1.0)
    tans = forward(g, inner, vals, [{k: one} for k in wrt])
    n, m = len(wrt), len(tape.outputs)
    outs = [vals[inner.outputs[j]] for j in range(m)] if with_value else []
    if with_gradient:
        outs += [vals[inner.outputs[m + k]] for k in range(m * n)]
    index = {}
    for j in range(m):
        for a in range(n):
            for b in range(a, n):
                index[(j, a, b)] = len(outs)
                outs.append(_zero_if_none(g, tans[b][m + j * n + a]))
    return g.finish(outs), index


def jvp_tape(tape: Tape, wrt) -> Tape:
    """Inputs: the tape's, then one tangent per input in ``wrt``. Outputs: values, then J·v."""
    g, vals, v = _start(tape, len(wrt))
    (tans,) = forward(g, tape, vals, [dict(zip(wrt, v))])
    return g.finish([vals[o] for o in tape.outputs] + [_zero_if_none(g, t) for t in tans])


def vjp_tape(tape: Tape, wrt) -> Tape:
    """Inputs: the tape's, then one cotangent per output. Outputs: values, then Jᵀ·u."""
    g, vals, u = _start(tape, len(tape.outputs))
    (adj,) = reverse(g, tape, vals, [dict(enumerate(u))])
    return g.finish([vals[o] for o in tape.outputs] + [_zero_if_none(g, adj[k]) for k in wrt])


def hvp_tape(tape: Tape, wrt) -> Tape:
    """For a scalar tape: inputs the tape's, then v (one per ``wrt``); outputs H·v.

    Forward over reverse: the JVP of the gradient tape.
    """
    grad = jacobian_tape(tape, wrt, "reverse")
    g, vals, v = _start(grad, len(wrt))
    (tans,) = forward(g, grad, vals, [dict(zip(wrt, v))])
    return g.finish([_zero_if_none(g, t) for t in tans])


def smallest(tapes) -> Tape:
    """The candidate that costs least (``Tape.cost``: without blocks, the fewest ops;
    the first among equals)."""
    return min(tapes, key=lambda t: t.cost)
