"""``np.linalg`` on traced values: one small matrix per point, in straight-line code.

Every function here is a handler of ``TracedArray.__array_function__`` (``HANDLED``):
it takes the object arrays of graph nodes a traced matrix holds and builds the
result's nodes, so the derivative rules are those of the primitive ops. There are no
branches on values: pivots are chosen with ``where`` (``linsolve``), rotations are
computed for every pair (``jacobi``), so one point's singular, indefinite or
non-finite matrix gives NaN (or NumPy's value for it) for that point and leaves the
batch alone. NumPy's ``LinAlgError`` is never raised.
"""
from __future__ import annotations

import functools
import operator

import numpy as np

from . import block_trace, jacobi, linsolve
from .errors import UnsupportedOperationError
from .graph import Var, active_graphs
from .traced_array import _dtype_of, _objects, _wrap

# NumPy's named tuples of results (plain tuples before NumPy 2)
_SLOGDET, _EIGH, _SVD = (type(r) for r in (
    np.linalg.slogdet(np.eye(1)), np.linalg.eigh(np.eye(1)), np.linalg.svd(np.eye(1))))


def _named(kind, *fields):
    return fields if kind is tuple else kind(*fields)


def _check(A, what, square=True):
    """``A``, the object array of a matrix argument, or a clear error."""
    if A.ndim != 2 or (square and A.shape[0] != A.shape[1]) or 0 in A.shape:
        shape = "square matrix per point (shape (n, n))" if square else \
            "matrix per point (shape (m, n))"
        raise UnsupportedOperationError(
            f"{what} on traced values takes one non-empty {shape}, got shape {A.shape}: "
            "for a stack of matrices, call it on each")
    return A


def _rows(a, what, square=True):
    """The elements of a traced matrix (shape (n, n), or (m, n) where ``square`` is
    False) as rows of Vars of the graph they go to."""
    A = _check(_objects(a), what, square)
    g = _graph_of(A.flat)
    return [[Var(g, g.operand(e)) for e in row] for row in A]


def _graph_of(elements):
    """The graph the elements' Vars belong to; the innermost trace's where they are all
    numbers (a matrix from ``bd.numpy.zeros``): the graph folds them as constants."""
    g = block_trace._graph(list(elements))
    return active_graphs()[-1] if g is None else g


def _ids(rows):
    return [[v.id for v in row] for row in rows]


def _traced(values, like):
    """A TracedArray of ``values`` (a Var or number, or nested lists of them)."""
    if not isinstance(values, list):
        return _wrap(values, _dtype_of((like,)))
    shape = (len(values), len(values[0])) if isinstance(values[0], list) else (len(values),)
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        row = values[index[0]]
        out[index] = row[index[1]] if len(shape) == 2 else row
    return _wrap(out, _dtype_of((like,)))


def _vars(g, nodes):
    return [[Var(g, x) for x in row] for row in nodes]


# -- linear systems and determinants (linsolve) --------------------------------------------

def _linalg_solve(a, b):
    """``np.linalg.solve`` per point: straight-line elimination with partial pivoting
    (``linsolve``); a singular or non-finite system gives NaN, not an exception."""
    A = _check(_objects(a), "np.linalg.solve")
    B = _objects(b)
    vector = B.ndim == 1
    if B.ndim not in (1, 2) or B.shape[0] != A.shape[0]:
        raise UnsupportedOperationError(
            f"np.linalg.solve on traced values takes b of shape ({A.shape[0]},) or "
            f"({A.shape[0]}, k), got {B.shape}")
    B2 = B.reshape(A.shape[0], -1)
    g = _graph_of([*A.flat, *B2.flat])
    X = linsolve.solve(g, [[g.operand(e) for e in row] for row in A],
                       [[g.operand(e) for e in row] for row in B2])
    out = _traced(_vars(g, X), (a, b))
    return out.reshape(B.shape) if vector else out


def _linalg_inv(a):
    """``np.linalg.inv`` per point: the solve with the identity (NaN where singular)."""
    n = len(_rows(a, "np.linalg.inv"))
    return _linalg_solve(a, np.eye(n))


def _linalg_det(a):
    """``np.linalg.det`` per point: the pivots' product with the permutation's sign;
    exactly 0 where a pivot is 0."""
    A = _rows(a, "np.linalg.det")
    g = A[0][0].graph
    return _traced(Var(g, linsolve.det(g, _ids(A))), a)


def _linalg_slogdet(a):
    """``np.linalg.slogdet`` per point: ``(sign, logabsdet)`` (NumPy's named tuple) from
    the same pivots as ``det``, so a determinant beyond the float range keeps its log;
    ``(0, -inf)`` where a pivot is 0, as NumPy, with NaN derivatives there (the log has
    none). ``d logabsdet = tr(A⁻¹ dA)``.

    >>> import numpy as np, batchdiff as bd
    >>> A = np.array([[[2.0, 1.0], [1.0, 3.0]], [[1.0, 2.0], [2.0, 4.0]]])
    >>> bd.vjp(lambda a: np.linalg.slogdet(a).logabsdet, backend="numpy")(A, np.ones(2))[0]
    array([1.60943791,       -inf])
    """
    A = _rows(a, "np.linalg.slogdet")
    g = A[0][0].graph
    sign, logabs = linsolve.slogdet(g, _ids(A))
    return _named(_SLOGDET, _traced(Var(g, sign), a), _traced(Var(g, logabs), a))


def _linalg_cholesky(a, /, *, upper=False):
    """``np.linalg.cholesky`` per point: ``L`` lower triangular with ``L Lᵀ = a`` from the
    lower triangle of ``a`` (``upper=True``: ``U = Lᵀ`` from the upper triangle), as
    LAPACK reads it. Where ``a`` is not positive definite every entry is NaN (NumPy
    raises ``LinAlgError`` for the whole call).

    >>> import numpy as np, batchdiff as bd
    >>> A = np.array([[[4.0, 2.0], [2.0, 5.0]], [[1.0, 2.0], [2.0, 1.0]]])
    >>> bd.vjp(np.linalg.cholesky, backend="numpy")(A, np.ones((2, 2, 2)))[0]
    array([[[ 2.,  0.],
            [ 1.,  2.]],
    <BLANKLINE>
           [[nan, nan],
            [nan, nan]]])
    """
    A = _rows(a, "np.linalg.cholesky")
    g = A[0][0].graph
    L = _vars(g, linsolve.cholesky(g, _ids(_transpose(A) if upper else A)))
    return _traced(_transpose(L) if upper else L, a)


def _transpose(rows):
    return [list(col) for col in zip(*rows)]


# -- symmetric eigenproblems and singular values (jacobi) ----------------------------------

def _symmetric(a, UPLO, what):
    """The symmetric matrix of the lower (``UPLO='L'``) or upper (``'U'``) triangle."""
    if UPLO not in ("L", "U", "l", "u"):
        raise ValueError(f"{what}: UPLO must be 'L' or 'U', got {UPLO!r}")
    A = _rows(a, what)
    lower = UPLO in ("L", "l")
    return [[A[max(i, j)][min(i, j)] if lower else A[min(i, j)][max(i, j)]
             for j in range(len(A))] for i in range(len(A))]


def _linalg_eigh(a, UPLO="L"):
    """``np.linalg.eigh`` per point: ``(eigenvalues, eigenvectors)`` (NumPy's named tuple)
    of the symmetric matrix of ``a``'s lower (``UPLO='L'``) or upper triangle, by cyclic
    Jacobi rotations unrolled for a fixed number of sweeps (``jacobi``; about 12 n
    instructions per rotation, n + 1 sweeps of n(n-1)/2 rotations: meant for n up to
    about 8). Eigenvalues ascending; eigenvector ``k`` is column ``k``, signed so that
    its entry of largest magnitude (the first of equals) is positive (LAPACK's sign is
    arbitrary). A non-finite entry makes the point's results NaN.

    Derivatives are those of the rotations, which are the perturbation formulas:
    ``dλ_k = v_kᵀ dA v_k`` and ``dv_k = Σ_j v_j (v_jᵀ dA v_k) / (λ_k - λ_j)`` where the
    eigenvalues are distinct. At a repeated eigenvalue the eigenvalues are not
    differentiable and the eigenvectors not unique: batchdiff returns the values, some
    orthonormal basis of the eigenspace and finite derivatives (the rotation between two
    equal diagonal entries is 0, so the derivatives are those of one ordering of the
    eigenvalue branches; their sum over the repeated eigenvalue is right).

    >>> import numpy as np, batchdiff as bd
    >>> A = np.array([[[2.0, 1.0], [1.0, 2.0]]])    # eigenvalues 1, 3: dλ = vᵀ dA v
    >>> bd.jacobian(lambda a: np.linalg.eigh(a).eigenvalues, backend="numpy")(A)[0]
    array([[[ 0.5,  0. ],
            [-1. ,  0.5]],
    <BLANKLINE>
           [[ 0.5,  0. ],
            [ 1. ,  0.5]]])

    (``UPLO='L'``: the upper triangle is not read, its derivative is 0.)
    """
    S = _symmetric(a, UPLO, "np.linalg.eigh")
    w, V = jacobi.eigh(S)
    return _named(_EIGH, _traced(w, a), _traced(V, a))


def _linalg_eigvalsh(a, UPLO="L"):
    """``np.linalg.eigvalsh`` per point: the eigenvalues of ``np.linalg.eigh``, ascending
    (the unused eigenvectors are dead code the tape drops)."""
    return _traced(jacobi.eigh(_symmetric(a, UPLO, "np.linalg.eigvalsh"))[0], a)


def _linalg_svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """``np.linalg.svd`` per point: ``(U, S, Vh)`` (NumPy's named tuple), or ``S`` where
    ``compute_uv=False``, singular values descending, by one-sided Jacobi rotations of
    the columns (``jacobi.svd``: accurate small singular values, derivatives through the
    rotations: ``dσ_k = u_kᵀ dA v_k`` where they are distinct and nonzero). Each pair
    ``u_k, v_k`` is signed so that ``u_k``'s entry of largest magnitude is positive. A
    zero singular value has derivative 0 there (as ``norm`` at 0) and a zero column in
    ``U``. ``hermitian`` is accepted (the general method gives the same values). For an
    (m, n) matrix with m != n, pass ``full_matrices=False`` to get ``U`` and ``Vh``:
    completing the basis is not supported.
    """
    A = _rows(a, "np.linalg.svd", square=False)
    if compute_uv and full_matrices and len(A) != len(A[0]):
        raise UnsupportedOperationError(
            f"np.linalg.svd of a non-square ({len(A)}, {len(A[0])}) traced matrix needs "
            "full_matrices=False (or compute_uv=False): the completed basis is not supported")
    U, s, V = jacobi.svd(A)
    if not compute_uv:
        return _traced(s, a)
    return _named(_SVD, _traced(U, a), _traced(s, a), _traced(_transpose(V), a))


_UNSET = object()      # NumPy's default rtol, told apart from rtol=None


def _linalg_pinv(a, rcond=None, hermitian=False, *, rtol=_UNSET):
    """``np.linalg.pinv`` per point: ``V diag(1/σ) Uᵀ`` from ``svd``, the singular values
    at or below ``rcond`` times the largest taken as zero (chosen by ``where``; ``rcond``
    and ``rtol`` as NumPy: 1e-15 by default, ``rtol=None`` gives max(m, n) eps). Its
    derivatives are those of the kept singular triplets, exact where the rank holds.
    ``hermitian`` is accepted (the general method gives the same values).

    >>> import numpy as np, batchdiff as bd
    >>> A = np.array([[[1.0, 2.0], [2.0, 4.0]]])                      # rank 1
    >>> bd.vjp(np.linalg.pinv, backend="numpy")(A, np.ones((1, 2, 2)))[0]
    array([[[0.04, 0.08],
            [0.08, 0.16]]])
    """
    A = _rows(a, "np.linalg.pinv", square=False)
    if rcond is not None and rtol is not _UNSET:
        raise ValueError("np.linalg.pinv: rtol and rcond can't be both set")
    if rcond is None:
        eps = np.finfo(_dtype_of((a,)) or np.float64).eps
        rcond = 1e-15 if rtol is _UNSET else rtol if rtol is not None else \
            max(len(A), len(A[0])) * eps
    U, s, V = jacobi.svd(A)
    kept = [x > rcond * s[0] for x in s]
    inverse = [jacobi.where(k, 1.0 / jacobi.where(k, x, 1.0), 0.0) for k, x in zip(kept, s)]
    return _traced([[sum(V[i][k] * inverse[k] * U[j][k] for k in range(len(s)))
                     for j in range(len(U))] for i in range(len(V))], a)


def _linalg_matrix_power(a, n):
    """``np.linalg.matrix_power`` per point: products by repeated squaring (``@``), the
    inverse first for a negative ``n`` (NaN where singular); ``n = 0`` is the identity."""
    n = operator.index(n)
    size = len(_rows(a, "np.linalg.matrix_power"))
    if n == 0:
        return _traced(np.eye(size).tolist(), a)
    result, base, n = None, _linalg_inv(a) if n < 0 else a, abs(n)
    while True:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if not n:
            return result
        base = base @ base


def _linalg_multi_dot(arrays, *, out=None):
    """``np.linalg.multi_dot``: ``np.dot`` left to right (the first array may be 1-D, a
    row; the last 1-D, a column), where NumPy chooses the cheapest order; the values
    agree to rounding."""
    if out is not None:
        raise UnsupportedOperationError("np.linalg.multi_dot(out=...) on traced values: "
                                        "use the returned array")
    dims = [np.ndim(x) for x in arrays]
    if len(arrays) < 2 or any(d != 2 for d in dims[1:-1]) or not {dims[0], dims[-1]} <= {1, 2}:
        raise ValueError("np.linalg.multi_dot takes at least two arrays: 2-D ones, the "
                         f"first and last may be 1-D; got dimensions {dims}")
    return functools.reduce(np.dot, arrays)


# -- norms --------------------------------------------------------------------------------

def _root(total, p):
    """``total ** (1/p)`` (sqrt for p = 2) with 0 and derivative 0 where ``total`` is 0:
    the root's infinite slope there times the zero slope of the sum would be NaN."""
    zero = total == 0.0
    safe = np.where(zero, 1.0, total)
    return np.where(zero, 0.0, np.sqrt(safe) if p == 2 else safe ** (1.0 / p))


def _vector_norm(x, ord, axis, keepdims):
    if ord is None or ord == 2:
        return _root(np.sum(x * x, axis=axis, keepdims=keepdims), 2)
    if isinstance(ord, str):
        raise ValueError(f"Invalid norm order {ord!r} for vectors")
    reduce = {np.inf: np.max, -np.inf: np.min}.get(ord, np.sum)
    if ord == 0:         # the count of nonzeros: a step, derivative 0
        return np.sum(np.where(x != 0.0, 1.0, 0.0), axis=axis, keepdims=keepdims)
    if ord in (1, np.inf, -np.inf):
        return reduce(np.abs(x), axis=axis, keepdims=keepdims)
    total = np.sum(np.abs(x) ** ord, axis=axis, keepdims=keepdims)
    return _root(total, ord) if ord > 0 else total ** (1.0 / ord)


def _singular_value_norm(x, ord, row, col, keepdims):
    """Norms 2, -2, 'nuc' of the matrices over axes ``row``, ``col``: their singular
    values (``jacobi.svd``) per matrix."""
    X = np.moveaxis(_objects(x), (row, col), (-2, -1))
    out = np.empty(X.shape[:-2], dtype=object)
    for index in np.ndindex(out.shape):
        _, s, _ = jacobi.svd(_rows(_wrap(X[index], None), "np.linalg.norm", square=False))
        out[index] = s[0] if ord == 2 else s[-1] if ord == -2 else sum(s[1:], s[0])
    if keepdims:
        out = np.expand_dims(out, (row, col))
    return _wrap(out, _dtype_of((x,)))


def _matrix_norm(x, ord, row, col, keepdims):
    if ord in (2, -2, "nuc"):
        return _singular_value_norm(x, ord, row, col, keepdims)
    if ord in (None, "fro", "f"):
        return _root(np.sum(x * x, axis=(row, col), keepdims=keepdims), 2)
    if ord not in (1, -1, np.inf, -np.inf):
        raise ValueError(f"Invalid norm order {ord!r} for matrices")
    # ord 1: the largest column sum of |x| (summed over rows); inf: the largest row sum
    over, then = (row, col) if ord in (1, -1) else (col, row)
    sums = np.sum(np.abs(x), axis=over, keepdims=True)
    out = (np.max if ord > 0 else np.min)(sums, axis=then, keepdims=True)
    return out if keepdims else np.squeeze(out, axis=(row, col))


def _norm(x, ord=None, axis=None, keepdims=False):
    """``np.linalg.norm`` on traced values, as NumPy: vector norms (``ord`` None or 2, 1,
    inf, -inf, 0: the count of nonzeros, derivative 0; any other p: ``sum(|x|^p)^(1/p)``)
    over one axis, matrix norms (None or 'fro', 1, -1, inf, -inf; 2, -2 and 'nuc' from
    the singular values, ``jacobi.svd``) over two; ``axis=None`` is the whole array,
    the 2-norm of it flattened for ``ord=None``. At x = 0 the 2-norm, the Frobenius
    norm and the p-norms with p > 0 are 0 with derivative 0, as ``hypot(0, 0)``.

    >>> import numpy as np, batchdiff as bd
    >>> bd.grad(lambda v: np.linalg.norm(v, ord=1), backend="numpy")(np.array([[3.0, -4.0]]))
    array([[ 1., -1.]])
    """
    ndim = np.ndim(x)
    if axis is None:
        if ord is None:
            return _vector_norm(x, None, None, keepdims)
        if ndim not in (1, 2):
            raise ValueError("Improper number of dimensions to norm.")
        axis = tuple(range(ndim))
    axis = tuple(np.atleast_1d(axis).tolist())
    if any(not -ndim <= i < ndim for i in axis):
        raise ValueError(f"np.linalg.norm: axis {axis} is out of bounds for {ndim} dimensions")
    axis = tuple(i % ndim for i in axis)
    if len(axis) == 1:
        return _vector_norm(x, ord, axis[0], keepdims)
    if len(axis) != 2 or axis[0] == axis[1]:
        raise ValueError(f"np.linalg.norm: axis must be one axis or two distinct axes, got {axis}")
    return _matrix_norm(x, ord, axis[0], axis[1], keepdims)


HANDLED = {
    np.linalg.norm: _norm,
    np.linalg.solve: _linalg_solve,
    np.linalg.inv: _linalg_inv,
    np.linalg.det: _linalg_det,
    np.linalg.slogdet: _linalg_slogdet,
    np.linalg.cholesky: _linalg_cholesky,
    np.linalg.eigh: _linalg_eigh,
    np.linalg.eigvalsh: _linalg_eigvalsh,
    np.linalg.svd: _linalg_svd,
    np.linalg.pinv: _linalg_pinv,
    np.linalg.matrix_power: _linalg_matrix_power,
    np.linalg.multi_dot: _linalg_multi_dot,
}
