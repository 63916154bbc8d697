"""Automatic differentiation as tape-to-tape transforms.

Two sweeps do all the work, both from the local partials in ``ops.py``:

- ``forward``: dual numbers. Every node carries a tangent for each of k directions;
  a node's tangent is the sum of its partials times its arguments' tangents.
- ``reverse``: the adjoint sweep. Walking the tape backwards, every node passes its
  adjoint times each partial on to its arguments.

A missing tangent or adjoint is a structural zero (``None``) and costs nothing; the
builder's rewrites remove the zeros and ones the chain rule makes. On top of the
sweeps, each ``*_tape`` function below maps a tape to a new tape (JVP, VJP, Jacobian,
Hessian, HVP), so transforms compose: a Hessian is a forward-mode Jacobian of a
Jacobian, and a third derivative is a Jacobian of that.
"""
from __future__ import annotations

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
        ps = partials[i]
        out = []
        for d in range(n_dir):
            acc = None
            for p, t in zip(ps, arg_tans):
                if p is not None and t is not None and t[d] is not None:
                    acc = _accumulate(g, acc, g.add("mul", (p, t[d])))
            out.append(acc)
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
        adj: dict[int, int] = {}
        for j, node in cot.items():
            o = tape.outputs[j]
            adj[o] = _accumulate(g, adj.get(o), node)
        for i in range(len(tape.instrs) - 1, tape.n_inputs - 1, -1):
            a = adj.get(i)
            ins = tape.instrs[i]
            if a is None or ins.is_const:
                continue
            for arg, p in zip(ins.args, partials[i]):
                if p is not None:
                    adj[arg] = _accumulate(g, adj.get(arg), g.add("mul", (a, p)))
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
    adjoint sweep per output, "auto" builds both and keeps the one with fewer ops.
    With ``with_value`` the original outputs come first.
    """
    if mode == "auto":
        return smallest(jacobian_tape(tape, wrt, m, with_value) for m in ("forward", "reverse"))
    g, vals, _ = _start(tape)
    jac = _jacobian_nodes(g, tape, vals, wrt, mode)
    outs = [vals[o] for o in tape.outputs] if with_value else []
    outs += [_zero_if_none(g, x) for row in jac for x in row]
    return g.finish(outs)


def hessian_tape(tape: Tape, wrt, mode: str = "auto") -> tuple[Tape, dict]:
    """Second derivatives of every output, upper triangle only.

    Returns ``(tape, index)`` where ``index[(j, a, b)]`` (a <= b) is the output position
    of d² out_j / d wrt[a] d wrt[b]. The inner Jacobian is taken in ``mode`` (forward:
    hyper-dual numbers; reverse: forward-over-reverse), the outer one in forward mode
    with one direction per input; entries below the diagonal are never output, so dead
    code elimination drops the work only they need.
    """
    if mode == "auto":
        return min((hessian_tape(tape, wrt, m) for m in ("forward", "reverse")),
                   key=lambda r: r[0].num_ops)
    inner = jacobian_tape(tape, wrt, mode)
    g, vals, _ = _start(inner)
    one = g.const(1.0)
    tans = forward(g, inner, vals, [{k: one} for k in wrt])
    n, m = len(wrt), len(tape.outputs)
    outs, index = [], {}
    for j in range(m):
        for a in range(n):
            for b in range(a, n):
                index[(j, a, b)] = len(outs)
                outs.append(_zero_if_none(g, tans[b][j * n + a]))
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
    """The candidate with the fewest ops (the first among equals)."""
    return min(tapes, key=lambda t: t.num_ops)
