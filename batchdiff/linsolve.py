"""Small dense linear systems as straight-line tape code, solved inside the kernel.

``solve(g, A, B)`` adds to graph ``g`` the instructions that solve ``A X = B`` for one
point: Gaussian elimination with partial pivoting, then back substitution. The pivot
search is a run of compare-and-swap steps written with ``where`` (row k and row i trade
places where ``|a_ik| > |a_kk|``), so every point runs the same instructions, as SIMD
lanes and GPU threads need; the largest entry of the column ends up on the diagonal, as
LAPACK's ``getrf`` chooses it (the first of equals). An n x n system costs about
n³ instructions: for the 3 x 3 and 10 x 10 systems of a Newton step in every mesh cell
that is less than writing J to memory and reading it back.

A point whose system is singular (a zero pivot) or holds a non-finite number gets NaN
in every entry of its solution, never a wrong number or an exception for the batch.
(A system whose entries sum beyond the dtype's range counts as non-finite.) ``det`` and
``slogdet`` read the same pivots; ``cholesky`` factors a symmetric positive definite
matrix, NaN throughout where it is not one.

>>> from batchdiff.graph import Graph
>>> from batchdiff.interpreter import evaluate
>>> import numpy as np
>>> g = Graph()
>>> a = [[g.input(), g.input()], [g.input(), g.input()]]
>>> b = [[g.input()], [g.input()]]
>>> x = solve(g, a, b)
>>> tape = g.finish([x[0][0], x[1][0]])
>>> A = np.array([[[0.0, 2.0], [1.0, 1.0]], [[1.0, 2.0], [2.0, 4.0]]])   # the 2nd singular
>>> rhs = np.array([[2.0, 3.0], [1.0, 1.0]])
>>> evaluate(tape, [A.reshape(2, 4), rhs], 2, np.float64)
array([[ 2.,  1.],
       [nan, nan]])
"""
from __future__ import annotations

def _check_square(A, B=None):
    n = len(A)
    if any(len(row) != n for row in A) or (B is not None and len(B) != n):
        raise ValueError(f"a square system is needed, got {len(A)} rows of lengths "
                         f"{[len(r) for r in A]}" + (f" and {len(B)} right-hand rows"
                                                     if B is not None else ""))
    return n


def _eliminate(g, M, n):
    """Forward elimination with partial pivoting on the rows ``M`` (n rows, the first n
    columns the matrix), in place. Returns the reciprocal pivots, the pivots and the
    sign of the row permutation (a node: -1.0 or 1.0)."""
    one, minus = g.const(1.0), g.const(-1.0)
    inverse, pivots, sign = [], [], one
    for c in range(n):
        for i in range(c + 1, n):
            swap = g.add("gt", (g.add("abs", (M[i][c],)), g.add("abs", (M[c][c],))))
            sign = g.add("where", (swap, g.add("mul", (sign, minus)), sign))
            for j in range(c, len(M[c])):
                top, other = M[c][j], M[i][j]
                M[c][j] = g.add("where", (swap, other, top))
                M[i][j] = g.add("where", (swap, top, other))
        pivot = M[c][c]
        pivots.append(pivot)
        inv = g.add("div", (one, pivot))
        inverse.append(inv)
        for i in range(c + 1, n):
            factor = g.add("mul", (M[i][c], inv))
            for j in range(c + 1, len(M[i])):
                M[i][j] = g.add("sub", (M[i][j], g.add("mul", (factor, M[c][j]))))
    return inverse, pivots, sign


def all_finite(g, nodes) -> int:
    """A node that is 1.0 where every one of ``nodes`` is finite, else 0.0.

    A non-finite entry makes the sum of all entries NaN or infinite (|sum| < inf fails):
    one add per entry. A sum that overflows from finite entries (beyond 1e308, 3e38 in
    float32) counts as non-finite too: the factorizations would overflow on such input.
    """
    total = None
    for e in nodes:
        total = e if total is None else g.add("add", (total, e))
    if total is None:
        return g.const(1.0)
    return g.add("where", (g.add("lt", (g.add("abs", (total,)), g.const(float("inf")))),
                           g.const(1.0), g.const(0.0)))


def solve(g, A, B) -> list:
    """Nodes ``X`` (n lists of k) with ``A X = B``; ``A`` n lists of n nodes, ``B`` n of k.

    See the module's docstring: partial pivoting by ``where``, NaN for a singular or
    non-finite system.
    """
    n = _check_square(A, B)
    k = len(B[0]) if n else 0
    M = [list(A[i]) + list(B[i]) for i in range(n)]
    zero = g.const(0.0)
    ok = all_finite(g, [e for row in M for e in row])
    inverse, pivots, _ = _eliminate(g, M, n)
    for pivot in pivots:
        ok = g.add("where", (g.add("eq", (pivot, zero)), zero, ok))
    nan = g.const(float("nan"))
    X = [[None] * k for _ in range(n)]
    for col in range(k):
        for i in range(n - 1, -1, -1):
            acc = M[i][n + col]
            for j in range(i + 1, n):
                acc = g.add("sub", (acc, g.add("mul", (M[i][j], X[j][col]))))
            X[i][col] = g.add("mul", (acc, inverse[i]))
    return [[g.add("where", (ok, x, nan)) for x in row] for row in X]


def det(g, A):
    """The node of ``det(A)``: the product of the pivots of partial-pivoting elimination
    with the permutation's sign; exactly 0 where a pivot is 0 (a singular matrix).

    >>> from batchdiff.graph import Graph
    >>> from batchdiff.interpreter import evaluate
    >>> import numpy as np
    >>> g = Graph()
    >>> a = [[g.input(), g.input()], [g.input(), g.input()]]
    >>> tape = g.finish([det(g, a)])
    >>> evaluate(tape, [np.array([[0.0, 2.0, 3.0, 1.0], [1.0, 2.0, 2.0, 4.0]])], 2,
    ...          np.float64)
    array([[-6.],
           [ 0.]])
    """
    n = _check_square(A)
    _, pivots, sign = _eliminate(g, [list(row) for row in A], n)
    zero = g.const(0.0)
    product = sign
    for pivot in pivots:
        product = g.add("mul", (product, pivot))
    return g.add("where", (_singular(g, pivots), zero, product))


def slogdet(g, A):
    """Nodes ``(sign, log|det A|)`` from the pivots of ``det``'s elimination, as NumPy's
    ``slogdet``: no overflow for large determinants; ``(0, -inf)`` where a pivot is 0.

    >>> from batchdiff.graph import Graph
    >>> from batchdiff.interpreter import evaluate
    >>> import numpy as np
    >>> g = Graph()
    >>> a = [[g.input(), g.input()], [g.input(), g.input()]]
    >>> tape = g.finish(list(slogdet(g, a)))
    >>> evaluate(tape, [np.array([[0.0, 2.0, 3.0, 1.0], [1.0, 2.0, 2.0, 4.0]])], 2,
    ...          np.float64)
    array([[-1.        ,  1.79175947],
           [ 0.        ,        -inf]])
    """
    n = _check_square(A)
    _, pivots, sign = _eliminate(g, [list(row) for row in A], n)
    logabs = g.const(0.0)
    for pivot in pivots:
        sign = g.add("mul", (sign, g.add("sign", (pivot,))))
        logabs = g.add("add", (logabs, g.add("log", (g.add("abs", (pivot,)),))))
    singular = _singular(g, pivots)
    return (g.add("where", (singular, g.const(0.0), sign)),
            g.add("where", (singular, g.const(float("-inf")), logabs)))


def _singular(g, pivots):
    """1.0 where one of the pivots is 0, else 0.0."""
    zero, flag = g.const(0.0), g.const(0.0)
    for pivot in pivots:
        flag = g.add("where", (g.add("eq", (pivot, zero)), g.const(1.0), flag))
    return flag


def cholesky(g, A):
    """Nodes ``L`` (n lists of n, zero above the diagonal) with ``L Lᵀ = A``, reading only
    the lower triangle of ``A``, as LAPACK's ``potrf``: the Cholesky-Banachiewicz order,
    about n³/6 multiplications. Where ``A`` is not positive definite (a pivot ``<= 0``)
    or holds a non-finite number, every entry of ``L`` is NaN.

    >>> from batchdiff.graph import Graph
    >>> from batchdiff.interpreter import evaluate
    >>> import numpy as np
    >>> g = Graph()
    >>> a = [[g.input(), g.input()], [g.input(), g.input()]]
    >>> tape = g.finish([x for row in cholesky(g, a) for x in row])
    >>> evaluate(tape, [np.array([[4.0, 0.0, 2.0, 5.0], [1.0, 0.0, 2.0, 1.0]])], 2,
    ...          np.float64)
    array([[ 2.,  0.,  1.,  2.],
           [nan, nan, nan, nan]])
    """
    n = _check_square(A)
    zero, one = g.const(0.0), g.const(1.0)
    ok = all_finite(g, [A[i][j] for i in range(n) for j in range(i + 1)])
    L = [[zero] * n for _ in range(n)]
    for j in range(n):
        for i in range(j, n):
            acc = A[i][j]
            for k in range(j):
                acc = g.add("sub", (acc, g.add("mul", (L[i][k], L[j][k]))))
            if i == j:
                positive = g.add("gt", (acc, zero))
                ok = g.add("where", (positive, ok, zero))
                # sqrt of 1 where the pivot is not positive: no NaN from sqrt itself
                L[j][j] = g.add("sqrt", (g.add("where", (positive, acc, one)),))
                inverse = g.add("div", (one, L[j][j]))
            else:
                L[i][j] = g.add("mul", (acc, inverse))
    nan = g.const(float("nan"))
    return [[g.add("where", (ok, x, nan)) for x in row] for row in L]
