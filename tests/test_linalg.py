"""np.linalg on traced matrices (``batchdiff.linsolve``, ``batchdiff.jacobi``).

Oracles: LAPACK through NumPy for the values; Jacobi's formula (d det A / dA = det(A)
A⁻ᵀ), d(A⁻¹b)/db = A⁻¹ and the other closed forms named below for the derivatives;
central differences of NumPy's own functions for the rest and for Hessians.
"""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff.errors import UnsupportedOperationError

EXECUTORS = [("numpy", "auto"), ("numba", "replay"), ("numba", "compiled")]


def _matrices(n, batch, rng):
    A = rng.normal(size=(batch, n, n)) + 0.5 * np.eye(n)
    if n > 1:
        A[: batch // 4, 0, 0] = 0.0                    # pivoting needed
    return A


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_values_match_lapack(n):
    rng = np.random.default_rng(n)
    A = _matrices(n, 24, rng)
    b = rng.normal(size=(24, n))
    B = rng.normal(size=(24, n, 2))
    opts = dict(backend="numpy")
    solve = bd.vjp(lambda a, b: np.linalg.solve(a, b), **opts)
    x, _ = solve(A, b, np.zeros((24, n)))
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-9,
                               atol=1e-10)
    X, _ = bd.vjp(lambda a, b: np.linalg.solve(a, b), **opts)(A, B, np.zeros((24, n, 2)))
    np.testing.assert_allclose(X, np.linalg.solve(A, B), rtol=1e-9, atol=1e-10)
    inv, _ = bd.vjp(np.linalg.inv, **opts)(A, np.zeros((24, n, n)))
    np.testing.assert_allclose(inv, np.linalg.inv(A), rtol=1e-9, atol=1e-10)
    det, _ = bd.value_and_grad(np.linalg.det, **opts)(A)
    np.testing.assert_allclose(det, np.linalg.det(A), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
def test_derivatives_by_jacobis_formula_and_the_inverse(backend, method):
    rng = np.random.default_rng(7)
    A = _matrices(3, 20, rng)
    b = rng.normal(size=(20, 3))
    opts = dict(backend=backend, method=method)
    grad_det = bd.grad(np.linalg.det, **opts)(A)
    ref = np.linalg.det(A)[:, None, None] * np.transpose(np.linalg.inv(A), (0, 2, 1))
    np.testing.assert_allclose(grad_det, ref, rtol=1e-9, atol=1e-10)
    dx_db = bd.jacobian(lambda b, a: np.linalg.solve(a, b), in_axes=(0, 0), **opts)(b, A)
    np.testing.assert_allclose(dx_db, np.linalg.inv(A), rtol=1e-9, atol=1e-10)


def test_hessian_of_a_gaussian_log_density_against_differences():
    """log N(y | 0, C(θ)) with C = [[θ0², θ0 θ1 ρ], [θ0 θ1 ρ, θ1²]]: det and solve."""
    y = np.array([0.3, -0.7])

    def logpdf(t):
        rho = 0.4
        C = np.stack([np.stack([t[0] ** 2, rho * t[0] * t[1]]),
                      np.stack([rho * t[0] * t[1], t[1] ** 2])])
        return -0.5 * (np.log(np.linalg.det(C)) + np.dot(y, np.linalg.solve(C, y)))

    theta = np.array([[1.2, 0.8], [0.7, 1.5]])
    H = bd.hessian(logpdf, backend="numpy")(theta)
    g = bd.grad(logpdf, backend="numpy")
    h = 1e-5
    for k in range(2):
        e = np.eye(2)[k] * h
        np.testing.assert_allclose(H[:, :, k], (g(theta + e) - g(theta - e)) / (2 * h),
                                   rtol=1e-6, atol=1e-7)


def test_singular_matrices_give_nan_solutions_and_zero_determinants():
    A = np.array([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[2.0, 1.0], [1.0, 3.0]]])
    x, _ = bd.vjp(lambda a: np.linalg.solve(a, np.ones(2)), backend="numpy")(
        A, np.zeros((3, 2)))
    assert np.isnan(x[:2]).all()
    np.testing.assert_allclose(x[2], np.linalg.solve(A[2], np.ones(2)))
    det, _ = bd.value_and_grad(np.linalg.det, backend="numpy")(A)
    np.testing.assert_array_equal(det, [0.0, 0.0, 5.0])


def test_errors_say_what_is_supported():
    with pytest.raises(UnsupportedOperationError, match="square matrix per point"):
        bd.grad(lambda v: np.linalg.det(v.reshape(2, 3)[:, :2].reshape(1, 2, 2)))(
            np.ones((1, 6)))
    with pytest.raises(UnsupportedOperationError, match="shape"):
        bd.grad(lambda v: np.sum(np.linalg.solve(v.reshape(2, 2), np.ones(3))))(
            np.ones((1, 4)))


# -- slogdet, cholesky, eigh, svd, norm, pinv, matrix_power, multi_dot ---------------------
# Oracles: LAPACK through NumPy for values; closed forms (d log|det A| = tr(A⁻¹ dA),
# dL = L Φ(L⁻¹ dA L⁻ᵀ), dλ = vᵀ dA v, dv_k = Σ v_j vⱼᵀ dA v_k / (λ_k - λ_j),
# dσ = uᵀ dA v) and central differences of NumPy's own functions for derivatives.

NUMPY = dict(backend="numpy")


def _value(f, X, **opts):
    """f's value at each point (the value half of a vjp with a zero cotangent)."""
    shape = np.shape(f(X[0]))
    return bd.vjp(f, **{**NUMPY, **opts})(X, np.zeros((len(X),) + shape))[0]


def _spd(n, batch, rng):
    X = rng.normal(size=(batch, n, n))
    return X @ np.swapaxes(X, 1, 2) + 0.5 * np.eye(n)


def _symmetric(n, batch, rng):
    X = rng.normal(size=(batch, n, n))
    return X + np.swapaxes(X, 1, 2)


def _lower_read(n):
    """dA of A's lower triangle as one symmetric perturbation reads it: 2 off the diagonal."""
    return np.tril(np.ones((n, n)), -1) * 2 + np.eye(n)


def test_slogdet_values_gradient_and_bad_points():
    rng = np.random.default_rng(11)
    A = _matrices(3, 12, rng)
    A[1] = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]]      # singular
    A[2, 1, 1] = np.nan
    A[3] *= 1e120                                                    # det overflows
    got = _value(lambda a: np.stack(np.linalg.slogdet(a)), A)
    good = [0, 1, *range(3, 12)]
    sign, logdet = np.linalg.slogdet(A[good])
    np.testing.assert_array_equal(got[good, 0], sign)
    np.testing.assert_allclose(got[good, 1], logdet, rtol=1e-12)
    assert got[1, 1] == -np.inf and np.isnan(got[2]).all() and np.isfinite(got[3, 1])
    grad = bd.grad(lambda a: np.linalg.slogdet(a).logabsdet, **NUMPY)(A)
    good.remove(1)
    np.testing.assert_allclose(grad[good], np.swapaxes(np.linalg.inv(A[good]), 1, 2),
                               rtol=1e-9, atol=0)
    assert np.isnan(grad[1:3]).all()


def test_slogdet_returns_numpys_named_tuple():
    seen = []

    def f(a):
        r = np.linalg.slogdet(a)
        seen.append((type(r), r.sign is r[0]))
        return r.logabsdet * r.sign
    bd.grad(f, **NUMPY)(np.eye(2)[None])
    assert seen[0] == (type(np.linalg.slogdet(np.eye(2))), True)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_cholesky_values_upper_and_the_triangle_read(n):
    rng = np.random.default_rng(n)
    A = _spd(n, 10, rng)
    garbage = A + np.triu(rng.normal(size=(10, n, n)), 1)    # upper triangle not read
    L = _value(np.linalg.cholesky, garbage)
    np.testing.assert_allclose(L, np.linalg.cholesky(A), rtol=1e-12, atol=1e-13)
    garbage = A + np.tril(rng.normal(size=(10, n, n)), -1)
    U = _value(lambda a: np.linalg.cholesky(a, upper=True), garbage)
    np.testing.assert_allclose(U, np.linalg.cholesky(A, upper=True), rtol=1e-12, atol=1e-13)


def test_cholesky_differential_and_not_positive_definite_points():
    rng = np.random.default_rng(5)
    A = _spd(3, 8, rng)
    A[1] = [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]      # indefinite
    A[2] = np.diag([1.0, 0.0, 1.0])                                 # semidefinite
    A[3, 2, 0] = np.inf
    dA = _symmetric(3, 8, rng)
    L, dL = bd.jvp(np.linalg.cholesky, **NUMPY)(A, dA)
    assert np.isnan(L[1:4]).all()
    good = [0, *range(4, 8)]
    Lr = np.linalg.cholesky(A[good])
    np.testing.assert_allclose(L[good], Lr, rtol=1e-12, atol=1e-13)
    Li = np.linalg.inv(Lr)
    inner = Li @ dA[good] @ np.swapaxes(Li, 1, 2)
    phi = np.tril(inner, -1) + 0.5 * inner * np.eye(3)
    np.testing.assert_allclose(dL[good], Lr @ phi, rtol=1e-9, atol=1e-10)


def _up_to_sign(V, ref):
    """Columns of ``ref`` signed as those of ``V``."""
    return ref * np.sign(np.sum(V * ref, axis=-2, keepdims=True))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_eigh_values_vectors_signs_and_uplo(n):
    rng = np.random.default_rng(20 + n)
    A = _symmetric(n, 16, rng)
    w_ref, V_ref = np.linalg.eigh(A)
    for uplo, hide in (("L", np.triu), ("U", np.tril)):
        garbage = A + hide(rng.normal(size=A.shape), 1 if uplo == "L" else -1)
        out = _value(lambda a: np.concatenate([np.linalg.eigh(a, UPLO=uplo).eigenvalues,
                                               np.linalg.eigh(a, UPLO=uplo)[1].ravel(),
                                               np.linalg.eigvalsh(a, uplo)]), garbage)
        w, V, w2 = out[:, :n], out[:, n:-n].reshape(-1, n, n), out[:, -n:]
        np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(w2, w)
        np.testing.assert_allclose(V, _up_to_sign(V, V_ref), atol=1e-10)
        # the documented sign: each column's entry of largest magnitude is positive
        big = np.take_along_axis(V, np.abs(V).argmax(axis=1)[:, None, :], axis=1)
        assert (big > 0).all()


def test_eigh_first_derivatives_by_perturbation_theory():
    rng = np.random.default_rng(3)
    A, dA = _symmetric(4, 20, rng), _symmetric(4, 20, rng)
    out, dout = bd.jvp(lambda a: np.concatenate([np.linalg.eigh(a)[0],
                                                 np.linalg.eigh(a)[1].ravel()]), **NUMPY)(A, dA)
    w, V = np.linalg.eigh(A)
    V = _up_to_sign(out[:, 4:].reshape(-1, 4, 4), V)
    C = np.swapaxes(V, 1, 2) @ dA @ V                       # vⱼᵀ dA v_k
    np.testing.assert_allclose(dout[:, :4], np.diagonal(C, axis1=1, axis2=2), rtol=1e-9,
                               atol=1e-10)
    gaps = w[:, None, :] - w[:, :, None]                    # λ_k - λ_j at [j, k]
    np.fill_diagonal(gaps[0], 1.0)
    for g in gaps:
        np.fill_diagonal(g, np.inf)
    np.testing.assert_allclose(dout[:, 4:].reshape(-1, 4, 4), V @ (C / gaps), rtol=1e-8,
                               atol=1e-9)


def test_eigenvalue_hessian_against_differences_of_the_closed_form_gradient():
    """d²λ_k/dA² from bd.hessian against central differences of vₖvₖᵀ (as the lower
    triangle reads it), computed by LAPACK."""
    rng = np.random.default_rng(8)
    A = _symmetric(3, 6, rng)

    def gradient(a, k):
        v = np.linalg.eigh(a)[1][..., k]
        return v[..., :, None] * v[..., None, :] * _lower_read(3)
    h = 1e-6
    for k in range(3):
        H = bd.hessian(lambda a: np.linalg.eigvalsh(a)[k], **NUMPY)(A)
        for i, j in [(0, 0), (1, 0), (2, 1), (2, 2)]:
            E = np.zeros((3, 3))
            E[i, j] = h
            fd = (gradient(A + E, k) - gradient(A - E, k)) / (2 * h)
            np.testing.assert_allclose(H[:, :, :, i, j], fd, rtol=1e-6, atol=1e-6)


def test_repeated_eigenvalues_are_right_with_finite_derivatives():
    """The docstring's promise: values and an orthonormal eigenbasis; finite gradients
    whose sum over the repeated eigenvalue is that of the smooth cluster sum,
    d(λ_0 + λ_1) = tr(P dA) with P the projector on the eigenspace."""
    rng = np.random.default_rng(4)
    Q = np.linalg.qr(rng.normal(size=(5, 3, 3)))[0]
    Q[0] = np.eye(3)
    A = Q @ np.diag([1.0, 1.0, 3.0]) @ np.swapaxes(Q, 1, 2)
    A = (A + np.swapaxes(A, 1, 2)) / 2
    A = np.concatenate([A, 2.0 * np.eye(3)[None]])
    out = _value(lambda a: np.concatenate([np.linalg.eigh(a)[0],
                                           np.linalg.eigh(a)[1].ravel()]), A)
    w, V = out[:, :3], out[:, 3:].reshape(-1, 3, 3)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A), atol=1e-12)
    np.testing.assert_allclose(np.swapaxes(V, 1, 2) @ V, np.broadcast_to(np.eye(3), V.shape),
                               atol=1e-12)
    np.testing.assert_allclose(A @ V, V * w[:, None, :], atol=1e-12)
    J = bd.jacobian(np.linalg.eigvalsh, **NUMPY)(A)
    assert np.isfinite(J).all()
    P = Q @ np.diag([1.0, 1.0, 0.0]) @ np.swapaxes(Q, 1, 2)
    np.testing.assert_allclose((J[:5, 0] + J[:5, 1]), P * _lower_read(3), atol=1e-10)
    np.testing.assert_allclose(J[5].sum(axis=0), np.eye(3), atol=1e-12)


def test_eigh_non_finite_points_are_nan_alone():
    rng = np.random.default_rng(6)
    A = _symmetric(3, 4, rng)
    A[1, 2, 0] = np.inf
    A[2, 1, 1] = np.nan
    A[3, 0, 2] = np.nan          # upper triangle: not read by UPLO='L'
    out = _value(lambda a: np.concatenate([np.linalg.eigh(a)[0],
                                           np.linalg.eigh(a)[1].ravel()]), A)
    assert np.isnan(out[1:3]).all() and np.isfinite(out[[0, 3]]).all()
    np.testing.assert_allclose(out[3, :3], np.linalg.eigvalsh(A[3]), atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4), (1, 3)])
def test_svd_values_vectors_and_singular_value_derivatives(shape):
    rng = np.random.default_rng(sum(shape))
    A = rng.normal(size=(12, *shape))
    m, n = shape
    k = min(shape)
    U_ref, s_ref, Vh_ref = np.linalg.svd(A, full_matrices=False)
    s = _value(lambda a: np.linalg.svd(a, compute_uv=False), A)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=1e-13)
    out = _value(lambda a: np.concatenate([x.ravel() for x in np.linalg.svd(
        a, full_matrices=False)]), A)
    U, Vh = out[:, :m * k].reshape(-1, m, k), out[:, m * k + k:].reshape(-1, k, n)
    np.testing.assert_allclose(U, _up_to_sign(U, U_ref), atol=1e-10)
    np.testing.assert_allclose(U * out[:, None, m * k:m * k + k] @ Vh, A, atol=1e-12)
    J = bd.jacobian(lambda a: np.linalg.svd(a, compute_uv=False), **NUMPY)(A)
    np.testing.assert_allclose(J, np.einsum("bik,bkj->bkij", U_ref, Vh_ref), atol=1e-9)


def test_svd_rank_deficient_and_the_errors():
    A = np.array([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 1.0]]])
    s = _value(lambda a: np.linalg.svd(a, compute_uv=False), A)
    np.testing.assert_allclose(s, np.linalg.svd(A, compute_uv=False), atol=1e-14)
    J = bd.jacobian(lambda a: np.linalg.svd(a, compute_uv=False), **NUMPY)(A)
    assert np.isfinite(J).all() and (J[1] == 0).all()
    with pytest.raises(UnsupportedOperationError, match="full_matrices=False"):
        bd.grad(lambda a: np.sum(np.linalg.svd(a)[0]), **NUMPY)(np.ones((1, 3, 2)))


NORM_CASES = [  # (shape, ord, axis, keepdims)
    ((4,), None, None, False), ((4,), 1, None, False), ((4,), np.inf, None, False),
    ((4,), -np.inf, None, True), ((4,), 0, None, False), ((4,), 3, None, False),
    ((4,), 0.5, 0, False), ((4,), -2, None, False),
    ((3, 4), None, None, True), ((3, 4), "fro", None, False), ((3, 4), 1, None, False),
    ((3, 4), -1, None, False), ((3, 4), np.inf, None, False), ((3, 4), -np.inf, None, True),
    ((3, 4), 2, None, False), ((3, 4), -2, None, False), ((3, 4), "nuc", None, True),
    ((3, 4), 1, 1, False), ((3, 4), 3, 0, True), ((2, 3, 3), 2, (2, 1), True),
    ((2, 3, 3), 1, (0, 2), False), ((2, 3, 3), "nuc", (1, 2), False),
]


@pytest.mark.parametrize("shape,ord,axis,keepdims", NORM_CASES,
                         ids=[f"{s}-{o}-{a}-{k}" for s, o, a, k in NORM_CASES])
@np.errstate(divide="ignore")         # NumPy's ord < 0 at the zero entry of X[0]
def test_norm_values_and_gradients_as_numpy(shape, ord, axis, keepdims):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, *shape))
    X[0].flat[0] = 0.0

    def f(x):
        return np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    got = _value(f, X)
    np.testing.assert_allclose(got, [f(x) for x in X], rtol=1e-12, atol=1e-13)
    assert got.shape[1:] == np.shape(f(X[0]))
    J = bd.jacobian(lambda x: np.sum(f(x)), **NUMPY)(X[1:])
    h = 1e-6
    for p in range(1, 5):
        fd = np.zeros(shape)
        for idx in np.ndindex(shape):
            E = np.zeros(shape)
            E[idx] = h
            fd[idx] = (np.sum(f(X[p] + E)) - np.sum(f(X[p] - E))) / (2 * h)
        np.testing.assert_allclose(J[p - 1], fd, rtol=1e-6, atol=1e-7)


def test_norm_errors_name_what_is_supported():
    for ord in ("nuc", "bad"):
        with pytest.raises(ValueError, match="norm order"):
            bd.grad(lambda v: np.linalg.norm(v, ord=ord), **NUMPY)(np.ones((1, 3)))
    with pytest.raises(ValueError, match="norm order"):
        bd.grad(lambda v: np.linalg.norm(v.reshape(2, 2), ord=3), **NUMPY)(np.ones((1, 4)))
    with pytest.raises(ValueError, match="dimensions"):
        bd.grad(lambda v: np.linalg.norm(v.reshape(2, 1, 2), ord=1), **NUMPY)(np.ones((1, 4)))


def test_pinv_full_rank_rank_deficient_and_its_derivative():
    rng = np.random.default_rng(9)
    A = rng.normal(size=(6, 4, 3))
    A[1, :, 2] = A[1, :, 0] + A[1, :, 1]                    # rank 2
    for rtol in (None, 1e-10):
        kwargs = {} if rtol is None else dict(rtol=rtol)
        P = _value(lambda a: np.linalg.pinv(a, **kwargs), A)
        np.testing.assert_allclose(P, np.linalg.pinv(A, **kwargs), atol=1e-12)
    _, dP = bd.jvp(np.linalg.pinv, **NUMPY)(A[[0, 2]], np.ones((2, 4, 3)))
    h = 1e-6
    fd = (np.linalg.pinv(A[[0, 2]] + h) - np.linalg.pinv(A[[0, 2]] - h)) / (2 * h)
    np.testing.assert_allclose(dP, fd, rtol=1e-6, atol=1e-8)


def test_matrix_power_and_multi_dot_as_numpy():
    rng = np.random.default_rng(10)
    A = _matrices(3, 5, rng)
    for n in (-3, 0, 1, 2, 5):
        got = _value(lambda a: np.linalg.matrix_power(a, n), A)
        np.testing.assert_allclose(got, np.linalg.matrix_power(A, n), rtol=1e-10, atol=1e-10)
    u, B = rng.normal(size=3), rng.normal(size=(3, 2))
    got = _value(lambda a: np.linalg.multi_dot([u, a, a, B]), A)
    np.testing.assert_allclose(got, [np.linalg.multi_dot([u, a, a, B]) for a in A], rtol=1e-12)
    with pytest.raises(ValueError, match="at least two"):
        bd.grad(lambda a: np.linalg.multi_dot([a])[0, 0], **NUMPY)(A)


def test_matrices_of_constants_fold():
    """A matrix from bd.numpy.ones holds numbers, no traced values: the results are
    constants of the tape, NumPy's numbers."""
    def f(v):
        C = bd.numpy.ones((2, 2)) + np.eye(2)
        return v[0] * np.linalg.eigvalsh(C)[1] + np.linalg.solve(C, bd.numpy.ones(2))[0]
    value, grad = bd.value_and_grad(f, **NUMPY)(np.ones((1, 2)))
    np.testing.assert_allclose(value, [3.0 + 1.0 / 3.0])
    np.testing.assert_allclose(grad, [[3.0, 0.0]])


def test_bad_matrices_get_clear_errors():
    for f in (np.linalg.slogdet, np.linalg.cholesky, np.linalg.eigh, np.linalg.eigvalsh):
        with pytest.raises(UnsupportedOperationError, match="square matrix per point"):
            bd.grad(lambda v: np.sum(f(v.reshape(2, 3))[0]), **NUMPY)(np.ones((1, 6)))
        with pytest.raises(UnsupportedOperationError, match="for a stack of matrices"):
            bd.grad(lambda v: np.sum(f(v.reshape(1, 2, 2))[0]), **NUMPY)(np.ones((1, 4)))
    with pytest.raises(ValueError, match="UPLO"):
        bd.grad(lambda v: np.sum(np.linalg.eigvalsh(v, UPLO="X")), **NUMPY)(np.ones((1, 2, 2)))


def _small(v):
    """Every new np.linalg function once on one 3x3 matrix (9 parameters)."""
    A = v.reshape(3, 3)
    S = A + A.T
    P = A @ A.T + np.eye(3)
    return np.concatenate([np.stack(np.linalg.slogdet(A)), np.linalg.eigvalsh(S),
                           np.linalg.eigh(S)[1][:, 0] ** 2, np.linalg.cholesky(P).ravel(),
                           np.linalg.svd(A, compute_uv=False),
                           np.stack([np.linalg.norm(A, ord=1), np.linalg.norm(v, ord=3)])])


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
def test_the_new_functions_on_every_executor_against_differences(backend, method):
    rng = np.random.default_rng(12)
    X = rng.normal(size=(4, 9))
    X[3, 4] = np.nan
    J = bd.jacobian(_small, backend=backend, method=method)(X)
    assert np.isnan(J[3]).any() and np.isfinite(J[:3]).all()
    h = 1e-6
    for p in range(3):
        fd = np.stack([(_small(X[p] + h * e) - _small(X[p] - h * e)) / (2 * h)
                       for e in np.eye(9)], axis=-1)
        np.testing.assert_allclose(J[p], fd, rtol=1e-6, atol=1e-7)
