"""Symmetric eigenproblems and singular values as straight-line tape code: Jacobi rotations.

``eigh(S)`` diagonalises a symmetric matrix by cyclic Jacobi sweeps (each pair ``p < q``
in turn is zeroed by a plane rotation), ``svd(A)`` orthogonalises the columns of ``A`` by
the same rotations (one-sided Jacobi, Hestenes), which is ``eigh`` of ``AᵀA`` without
forming it and keeps the small singular values accurate. Elements are ``Var`` s of one
graph, so the derivatives are those of the rotations' arithmetic: differentiating
through the converged sweeps gives the perturbation formulas (dλ = vᵀ dA v, ...).

The number of sweeps is fixed by the size, so every point runs the same instructions.
Cyclic Jacobi converges quadratically; measured on 20,000 random, graded (eigenvalues
over 16 decades) and nearly repeated spectra per size, the largest off-diagonal entry
relative to ``|A|`` falls to the rounding level of float64 after ``n + 1`` sweeps up to
n = 10 (1 for n = 2, which one rotation diagonalises). The derivatives converge with
the values: with ``n + 1`` sweeps they match dλ = vᵀ dA v to 1e-14 at n = 3 ... 8,
where ``n`` sweeps leave 1e-10 at n = 3.

The code grows as n⁴ (n + 1 sweeps of n(n-1)/2 rotations of about 12 n instructions):
meant for matrices up to about 8 x 8: there a vjp of the eigenvalues is some 42,000
instructions, with the eigenvectors 84,000 (3 x 3: 800 and 1,600).

>>> from batchdiff.graph import Graph, Var
>>> from batchdiff.interpreter import evaluate
>>> import numpy as np
>>> g = Graph()
>>> a, b, c = (Var(g, g.input()) for _ in range(3))
>>> w, V = eigh([[a, b], [b, c]])
>>> tape = g.finish([x.id for x in w])
>>> evaluate(tape, [np.array([[2.0, 1.0, 2.0]])], 1, np.float64)
array([[1., 3.]])
"""
from __future__ import annotations

from .graph import Var, apply
from .linsolve import all_finite


def sweeps(n: int) -> int:
    """Jacobi sweeps for an n x n matrix: enough for float64 (module docstring)."""
    return 0 if n < 2 else 1 if n == 2 else n + 1


def where(c, a, b):
    """``where(c, a, b)``; plain numbers (the identity's entries) select in Python."""
    if not any(isinstance(x, Var) for x in (c, a, b)):
        return a if c else b
    return apply("where", (c, a, b))


def _rotation(app, aqq, apq):
    """``(c, s, t)``: the rotation that zeroes ``apq`` of ``[[app, apq], [apq, aqq]]``,
    ``t = s / c = tan θ`` with ``|θ| <= π/4`` (Rutishauser's choice), written without
    branches and without dividing by ``apq``: with d = aqq - app and σ = ±1 its sign
    (+1 at 0), t = 2 σ apq / (σ d + hypot(d, 2 apq)), and t = 0 where apq = d = 0.
    σ d rather than |d|: at d = 0 the derivative is that of the branch taken (d > 0),
    where abs'(0) = 0 would drop the d term."""
    d = aqq - app
    sign = where(d < 0.0, -1.0, 1.0)
    den = sign * d + apply("hypot", (d, 2.0 * apq))
    t = 2.0 * sign * apq / where(den == 0.0, 1.0, den)
    c = 1.0 / apply("sqrt", (1.0 + t * t,))
    return c, t * c, t


def _rotate(vectors, p, q, c, s):
    """Columns p, q of ``vectors`` (a list of rows) become c v_p - s v_q, s v_p + c v_q."""
    for row in vectors:
        vp, vq = row[p], row[q]
        row[p], row[q] = c * vp - s * vq, s * vp + c * vq


def _sort(values, vector_sets, descending=False):
    """Sort ``values`` by a bubble network of compare-exchanges (``where``, no branches),
    moving the columns of each matrix in ``vector_sets`` along. A NaN stays in place."""
    n = len(values)
    for end in range(n - 1, 0, -1):
        for i in range(end):
            a, b = values[i], values[i + 1]
            swap = (b > a) if descending else (b < a)
            values[i], values[i + 1] = where(swap, b, a), where(swap, a, b)
            for rows in vector_sets:
                for row in rows:
                    u, v = row[i], row[i + 1]
                    row[i], row[i + 1] = where(swap, v, u), where(swap, u, v)


def _fix_signs(rows, *others):
    """Make each column's entry of largest magnitude (the first of equals) positive,
    flipping the same columns of ``others``."""
    for k in range(len(rows[0])):
        big = rows[0][k]
        for row in rows[1:]:
            big = where(abs(row[k]) > abs(big), row[k], big)
        sign = where(big < 0.0, -1.0, 1.0)
        for row in [*rows, *(r for vectors in others for r in vectors)]:
            row[k] = sign * row[k]


def _finite(rows, *outputs):
    """``outputs`` (lists of rows of Vars) with every entry NaN where ``rows`` holds a
    non-finite number (``linsolve.all_finite``), so such a point gets NaN throughout."""
    entries = [e for row in rows for e in row]
    g = entries[0].graph
    ok = Var(g, all_finite(g, [e.id for e in entries]))
    return [[[where(ok, x, float("nan")) for x in row] for row in rows_out]
            for rows_out in outputs]


def _identity(n):
    return [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]


def eigh(S):
    """``(w, V)`` of the symmetric matrix ``S`` (n lists of n Vars, both triangles read):
    eigenvalues ``w`` ascending and the eigenvectors as the columns of ``V`` (n lists),
    each with its entry of largest magnitude positive.

    At a repeated eigenvalue the values are right and the vectors some orthonormal basis
    of its eigenspace; the rotations between equal diagonal entries are then 0 (not a
    limit), so the derivatives are finite, those of one branch of the eigenvalues.
    """
    n = len(S)
    A = [list(row) for row in S]
    V = _identity(n)
    for _ in range(sweeps(n)):
        for p in range(n):
            for q in range(p + 1, n):
                app, aqq, apq = A[p][p], A[q][q], A[p][q]
                c, s, t = _rotation(app, aqq, apq)
                others = [k for k in range(n) if k not in (p, q)]
                _rotate([A[k] for k in others], p, q, c, s)
                for k in others:
                    A[p][k], A[q][k] = A[k][p], A[k][q]
                # the new A_pq is zero as a function of S (t is chosen so), and so are
                # its derivatives; the diagonal follows from that identity
                A[p][p], A[q][q] = app - t * apq, aqq + t * apq
                A[p][q] = A[q][p] = 0.0
                _rotate(V, p, q, c, s)
    w = [A[i][i] for i in range(n)]
    _sort(w, [V])
    _fix_signs(V)
    [w], V = _finite(S, [w], V)
    return w, V


def svd(A):
    """``(U, s, V)`` with ``A = U diag(s) Vᵀ`` for ``A`` (m lists of n Vars): k = min(m, n)
    singular values ``s`` descending, ``U`` m lists of k, ``V`` n lists of k, each pair
    of columns signed so that the entry of ``U``'s column of largest magnitude is
    positive. One-sided Jacobi on the columns of ``A`` (of ``Aᵀ`` where m < n).

    A zero singular value is a column of norm 0, taken as 0 with derivative 0 (as
    ``np.linalg.norm`` at 0); its column of ``U`` is zero, not a completed basis.
    """
    m, n = len(A), len(A[0])
    if m < n:
        V, s, U = svd([list(col) for col in zip(*A)])
        return U, s, V
    C = [list(row) for row in A]
    V = _identity(n)
    for _ in range(sweeps(n)):
        for p in range(n):
            for q in range(p + 1, n):
                gram = [sum(row[i] * row[j] for row in C) for i, j in ((p, p), (q, q), (p, q))]
                c, s, _ = _rotation(*gram)
                _rotate(C, p, q, c, s)
                _rotate(V, p, q, c, s)
    sigma = []
    for k in range(n):
        squares = sum(row[k] * row[k] for row in C)
        zero = squares == 0.0
        sigma.append(where(zero, 0.0, apply("sqrt", (where(zero, 1.0, squares),))))
    U = [[row[k] / where(sigma[k] == 0.0, 1.0, sigma[k]) for k in range(n)] for row in C]
    _sort(sigma, [U, V], descending=True)
    _fix_signs(U, V)
    [sigma], U, V = _finite(A, [sigma], U, V)
    return U, sigma, V
