"""Solver steps as tapes: Newton and Gauss–Newton, with the Jacobian never leaving the kernel.

A Newton step of ``F(x) = 0`` is ``s = -J(x)⁻¹ F(x)``; damped (Levenberg–Marquardt
on a square system) ``s = -(J + λI)⁻¹ F``. A Gauss–Newton step of a least-squares
residual ``r(x)`` (m residuals, n parameters) is ``s = -(JᵀJ + λI)⁻¹ Jᵀr``. Each builder
here takes the value-and-Jacobian tape of F (``ad.jacobian_tape`` with the value) and
appends the products and the solve (``linsolve.solve``) to it, so one kernel reads x
and writes s: J, n² numbers a point, is never written to memory and read back.

>>> import numpy as np
>>> from batchdiff.tracer import trace
>>> from batchdiff.interpreter import evaluate
>>> F = lambda x: np.stack([x[0] ** 2 - 4.0, x[0] * x[1] - 2.0])
>>> tape, _, _ = trace(F, [(2,)])
>>> step = newton_tape(tape, [0, 1])
>>> evaluate(step, [np.array([[1.0, 1.0], [3.0, 0.5]])], 2, np.float64)   # x* = (2, 1)
array([[ 1.5       , -0.5       ],
       [-0.83333333,  0.30555556]])
"""
from __future__ import annotations

from . import ad
from .errors import ShapeError
from .graph import Tape
from .linsolve import solve


def _value_and_jacobian(tape: Tape, wrt, mode: str, n_extra: int):
    """Graph, value nodes F (m), Jacobian nodes J (m lists of n), extra input nodes."""
    inner = ad.jacobian_tape(tape, wrt, mode, with_value=True)
    g, vals, extra = ad._start(inner, n_extra)
    m, n = len(tape.outputs), len(wrt)
    F = [vals[inner.outputs[j]] for j in range(m)]
    J = [[vals[inner.outputs[m + j * n + a]] for a in range(n)] for j in range(m)]
    return g, F, J, extra


def _damp(g, A, lam):
    for i in range(len(A)):
        A[i][i] = g.add("add", (A[i][i], lam))


def newton_tape(tape: Tape, wrt, mode: str = "auto", damped: bool = False) -> Tape:
    """Outputs the step ``-(J + λI)⁻¹ F`` (λ = 0 unless ``damped``: then λ is an input
    after the tape's own). F must have as many outputs as ``wrt`` has inputs."""
    m, n = len(tape.outputs), len(wrt)
    if m != n:
        raise ShapeError(f"a Newton step needs a square system: the function has {m} "
                         f"output(s) and {n} differentiated input(s); for a least-squares "
                         "residual use gauss_newton_step")
    g, F, J, extra = _value_and_jacobian(tape, wrt, mode, int(damped))
    if damped:
        _damp(g, J, extra[0])
    x = solve(g, J, [[g.add("neg", (f,))] for f in F])
    return g.finish([row[0] for row in x])


def _normal_equations(g, F, J):
    """JᵀJ (n lists of n nodes, symmetric: the same node above and below) and Jᵀr."""
    m, n = len(J), len(J[0]) if J else 0
    JtJ = [[None] * n for _ in range(n)]
    for a in range(n):
        for b in range(a, n):
            JtJ[a][b] = JtJ[b][a] = _dot(g, [J[j][a] for j in range(m)],
                                         [J[j][b] for j in range(m)])
    Jtr = [_dot(g, [J[j][a] for j in range(m)], F) for a in range(n)]
    return JtJ, Jtr


def _dot(g, xs, ys):
    acc = None
    for x, y in zip(xs, ys):
        term = g.add("mul", (x, y))
        acc = term if acc is None else g.add("add", (acc, term))
    return g.const(0.0) if acc is None else acc


def gauss_newton_tape(tape: Tape, wrt, mode: str = "auto", damped: bool = False,
                      step: bool = True) -> Tape:
    """With ``step``: outputs ``-(JᵀJ + λI)⁻¹ Jᵀr`` (λ an input after the tape's own when
    ``damped``, else 0). Without: outputs r (m), JᵀJ (n x n, row-major) and Jᵀr (n)."""
    g, F, J, extra = _value_and_jacobian(tape, wrt, mode, int(damped and step))
    JtJ, Jtr = _normal_equations(g, F, J)
    if not step:
        return g.finish(F + [x for row in JtJ for x in row] + Jtr)
    A = [list(row) for row in JtJ]
    if damped:
        _damp(g, A, extra[0])
    x = solve(g, A, [[g.add("neg", (v,))] for v in Jtr])
    return g.finish([row[0] for row in x])
