"""np.linalg.solve, inv and det on traced matrices (``batchdiff.linsolve``).

Oracles: LAPACK through NumPy for the values, Jacobi's formula (d det A / dA = det(A)
A⁻ᵀ) and d(A⁻¹b)/db = A⁻¹ for the derivatives, central differences for the Hessian.
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
