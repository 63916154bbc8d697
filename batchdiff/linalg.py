"""``np.linalg`` on traced values: one small matrix per point, in straight-line code.

Every function here is a handler of ``TracedArray.__array_function__`` (``HANDLED``):
it takes the object arrays of graph nodes a traced matrix holds and builds the
result's nodes, so the derivative rules are those of the primitive ops. There are no
branches on values: pivots are chosen with ``where`` (``linsolve``), so one point's
singular matrix gives NaN for that point and leaves the batch alone.
"""
from __future__ import annotations

import numpy as np

from . import block_trace, linsolve
from .errors import UnsupportedOperationError
from .graph import Var
from .traced_array import _dtype_of, _objects, _wrap


def _norm(x, ord=None, axis=None, keepdims=False):
    matrix = (np.ndim(x) if axis is None else np.size(axis)) == 2
    if ord not in (None, 2, "fro") or (ord == 2 and matrix):
        raise UnsupportedOperationError(
            f"np.linalg.norm(ord={ord!r}) is not supported on traced values: "
            "only the 2-norm of vectors and the Frobenius norm (ord=None or 'fro')")
    squares = np.sum(x * x, axis=axis, keepdims=keepdims)
    # sqrt'(0) = inf times d(x*x) = 0 would make the derivative NaN at x = 0; it is 0
    # there, as for hypot(0, 0) (the double where keeps NaN out of reverse mode too)
    zero = squares == 0.0
    return np.where(zero, 0.0, np.sqrt(np.where(zero, 1.0, squares)))


def _square_elements(a, what):
    """The object array of a traced (n, n) matrix and the graph its elements go to."""
    A = _objects(a)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise UnsupportedOperationError(
            f"{what} on traced values takes one square matrix per point (shape (n, n)), "
            f"got shape {A.shape}: for a stack of matrices, call it on each")
    return A


def _linalg_solve(a, b):
    """``np.linalg.solve`` per point: straight-line elimination with partial pivoting
    (``linsolve``); a singular or non-finite system gives NaN, not an exception."""
    A = _square_elements(a, "np.linalg.solve")
    B = _objects(b)
    vector = B.ndim == 1
    if B.ndim not in (1, 2) or B.shape[0] != A.shape[0]:
        raise UnsupportedOperationError(
            f"np.linalg.solve on traced values takes b of shape ({A.shape[0]},) or "
            f"({A.shape[0]}, k), got {B.shape}")
    B2 = B.reshape(A.shape[0], -1)
    g = block_trace._graph([*A.flat, *B2.flat])
    X = linsolve.solve(g, [[g.operand(e) for e in row] for row in A],
                       [[g.operand(e) for e in row] for row in B2])
    out = np.empty(B2.shape, dtype=object)
    for i, row in enumerate(X):
        for j, node in enumerate(row):
            out[i, j] = Var(g, node)
    return _wrap(out.reshape(B.shape) if vector else out, _dtype_of((a, b)))


def _linalg_inv(a):
    """``np.linalg.inv`` per point: the solve with the identity (NaN where singular)."""
    n = np.shape(_objects(a))[0] if np.ndim(_objects(a)) == 2 else 0
    return _linalg_solve(a, np.eye(n) if n else np.empty((0, 0)))


def _linalg_det(a):
    """``np.linalg.det`` per point: the pivots' product with the permutation's sign."""
    A = _square_elements(a, "np.linalg.det")
    g = block_trace._graph(list(A.flat))
    return _wrap(Var(g, linsolve.det(g, [[g.operand(e) for e in row] for row in A])),
                 _dtype_of((a,)))


HANDLED = {
    np.linalg.norm: _norm,
    np.linalg.solve: _linalg_solve,
    np.linalg.inv: _linalg_inv,
    np.linalg.det: _linalg_det,
}
