"""Whole-tape cleanup: a finished tape simplified again, or stripped of ``stop``.

The peephole rewrites (``peephole.py``) run as a graph grows; common-subexpression
elimination is the builder's hash-consing, and dead code is dropped when a graph is
frozen (``graph.compact``). ``simplify(tape)`` runs all of it again over a finished
tape, by replaying it into a fresh graph.
"""
from __future__ import annotations

from .graph import Graph, compact, replay


def simplify(tape):
    """Fold, apply identities, share common subexpressions and drop dead code.

    >>> import batchdiff as bd, numpy as np
    >>> t = bd.grad(lambda v: v[0] * 0 + v[1] * 1.0).tape(np.ones((1, 2)))
    >>> t.num_ops
    0
    """
    g = Graph()
    inputs = [g.input() for _ in range(tape.n_inputs)]
    vals = replay(g, tape, inputs)
    return g.finish([vals[o] for o in tape.outputs])


def strip_stops(tape):
    """The tape with every ``stop`` (stop_gradient) replaced by its argument.

    Executors run this: once no further derivative will be taken, ``stop`` is
    the identity.
    """
    alias = list(range(len(tape.instrs)))
    instrs = []
    for i, ins in enumerate(tape.instrs):
        if ins.op == "stop":
            alias[i] = alias[ins.args[0]]
        instrs.append(ins._replace(args=tuple(alias[a] for a in ins.args)))
    if all(a == i for i, a in enumerate(alias)):
        return tape
    return simplify(compact(instrs, [alias[o] for o in tape.outputs], tape.n_inputs))
