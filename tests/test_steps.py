"""Solver steps in the kernel: ``linsolve.solve``, ``newton_step``, ``gauss_newton_step``,
``gauss_newton``.

The oracles: LAPACK (``np.linalg.solve``, ``np.linalg.lstsq``) on Jacobians written out by
hand, and closed-form solutions.
"""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff.errors import ShapeError
from batchdiff.graph import Graph
from batchdiff.interpreter import evaluate
from batchdiff.linsolve import solve

EXECUTORS = [("numpy", "auto"), ("numba", "replay"), ("numba", "compiled")]


def _solver_tape(n, k):
    g = Graph()
    A = [[g.input() for _ in range(n)] for _ in range(n)]
    B = [[g.input() for _ in range(k)] for _ in range(n)]
    X = solve(g, A, B)
    return g.finish([x for row in X for x in row])


@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (3, 2), (5, 1), (7, 3)])
def test_solve_matches_lapack(n, k):
    rng = np.random.default_rng(n * 10 + k)
    A = rng.normal(size=(50, n, n))
    if n > 1:
        A[:10, 0, 0] = 0.0                  # needs a row swap
    A[10:20] = A[10:20][:, ::-1]            # anti-diagonal heavy: swaps at every column
    B = rng.normal(size=(50, n, k))
    got = evaluate(_solver_tape(n, k), [A.reshape(50, -1), B.reshape(50, -1)], 50, np.float64)
    np.testing.assert_allclose(got.reshape(50, n, k), np.linalg.solve(A, B), rtol=1e-9,
                               atol=1e-9)


def test_solve_pivots_like_partial_pivoting():
    """A system that elimination without pivoting gets badly wrong (a tiny pivot)."""
    A = np.array([[[1e-20, 1.0], [1.0, 1.0]]])
    b = np.array([[1.0, 2.0]])
    got = evaluate(_solver_tape(2, 1), [A.reshape(1, 4), b], 1, np.float64)
    np.testing.assert_allclose(got[0], np.linalg.solve(A[0], b[0]), rtol=1e-15)


def test_solve_gives_nan_for_singular_or_non_finite_points():
    tape = _solver_tape(3, 1)
    good = np.eye(3) + 0.1
    cases = [good, np.ones((3, 3)), np.zeros((3, 3)),
             np.where(np.eye(3) > 0, np.inf, 0.0), good.copy()]
    cases[4][1, 2] = np.nan
    A = np.stack(cases).reshape(5, 9)
    b = np.ones((5, 3))
    b_inf = b.copy()
    b_inf[0, 1] = np.inf
    got = evaluate(tape, [A, b], 5, np.float64)
    np.testing.assert_allclose(got[0], np.linalg.solve(good, np.ones(3)), rtol=1e-14)
    assert np.isnan(got[1:]).all()
    assert np.isnan(evaluate(tape, [A[:1], b_inf[:1]], 1, np.float64)).all()


# -- Newton steps: an implicit Euler step of Robertson's stiff kinetics -------------------
H = 0.5


def _robertson(y):
    return np.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
                     0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                     3e7 * y[1] ** 2])


def _robertson_jacobian(y):
    y1, y2, y3 = y[:, 0], y[:, 1], y[:, 2]
    z = np.zeros_like(y1)
    return np.stack([np.stack([-0.04 + z, 1e4 * y3, 1e4 * y2], -1),
                     np.stack([0.04 + z, -1e4 * y3 - 6e7 * y2, -1e4 * y2], -1),
                     np.stack([z, 6e7 * y2, z], -1)], -2)


def _residual(y, y_old):
    """The implicit Euler residual G(y) = y - y_old - h f(y); y_old shared by all points."""
    return y - y_old - H * _robertson(y)


Y_OLD = np.array([1.0, 0.0, 0.0])


def _points(batch, rng):
    return np.column_stack([rng.uniform(0.5, 1.0, batch), rng.uniform(0, 3e-5, batch),
                            rng.uniform(0, 0.5, batch)])


def _newton_reference(y, lam=0.0):
    G = y - Y_OLD - H * np.stack([_robertson(p) for p in y])
    J = np.eye(3) - H * _robertson_jacobian(y) + np.asarray(lam)[..., None, None] * np.eye(3)
    return -np.linalg.solve(J, G[..., None])[..., 0]


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_newton_step_of_a_stiff_system(backend, method, dtype):
    rng = np.random.default_rng(1)
    y = _points(64, rng)
    tol = 1e-9 if dtype == np.float64 else 1e-3
    step = bd.newton_step(_residual, in_axes=(0, None), backend=backend, method=method)
    got = step(y.astype(dtype), Y_OLD.astype(dtype))
    assert got.dtype == dtype and got.shape == y.shape
    ref = _newton_reference(y)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())

    lam = rng.uniform(0.1, 2.0, 64)
    damped = bd.newton_step(_residual, damped=True, in_axes=(0, None), backend=backend,
                            method=method)
    ref = _newton_reference(y, lam)
    got = damped(y.astype(dtype), Y_OLD.astype(dtype), lam.astype(dtype))
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
    got = damped(y.astype(dtype), Y_OLD.astype(dtype), dtype(0.7))     # one λ for all
    ref = _newton_reference(y, 0.7)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_newton_iteration_converges_to_the_root():
    """Newton's iteration on x² = a, per point: the step's fixed point is sqrt(a)."""
    a = np.linspace(0.5, 9.0, 20)
    step = bd.newton_step(lambda x, a: np.stack([x[0] ** 2 - a]), in_axes=(0, 0))
    x = np.ones((20, 1)) * 3.0
    for _ in range(30):
        x = x + step(x, a)
    np.testing.assert_allclose(x[:, 0], np.sqrt(a), rtol=1e-14)


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_singular_points_get_nan_on_every_executor(backend, method, dtype):
    F = lambda x: np.stack([x[0] * x[1], x[0] + x[1] ** 2])   # noqa: E731  J singular at 0
    x = np.array([[0.0, 0.0], [1.0, 2.0], [np.nan, 1.0], [np.inf, 1.0]], dtype=dtype)
    got = bd.newton_step(F, backend=backend, method=method)(x)
    assert np.isnan(got[[0, 2, 3]]).all()
    J = np.array([[2.0, 1.0], [1.0, 4.0]])
    np.testing.assert_allclose(got[1], -np.linalg.solve(J, [2.0, 5.0]),
                               rtol=1e-13 if dtype == np.float64 else 1e-6)


def _exp_residual(p, t, y):
    return p[0] * np.exp(p[1] * t) + p[2] - y


def _exp_jacobian(p, t):
    e = np.exp(p[:, 1:2] * t)
    return np.stack([e, p[:, 0:1] * t * e, np.ones_like(e)], -1)


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
def test_gauss_newton_step_and_products(backend, method):
    rng = np.random.default_rng(2)
    t = np.linspace(0.0, 2.0, 7)
    y = 1.5 * np.exp(-0.8 * t) + 0.3
    p = np.column_stack([rng.uniform(1, 2, 30), rng.uniform(-1.2, -0.5, 30),
                         rng.uniform(0, 0.5, 30)])
    opts = dict(in_axes=(0, None, None), backend=backend, method=method)
    J = _exp_jacobian(p, t)
    r = p[:, :1] * np.exp(p[:, 1:2] * t) + p[:, 2:] - y
    res, JtJ, Jtr = bd.gauss_newton(_exp_residual, **opts)(p, t, y)
    np.testing.assert_allclose(res, r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(JtJ, np.einsum("bki,bkj->bij", J, J), rtol=1e-11)
    np.testing.assert_allclose(Jtr, np.einsum("bki,bk->bi", J, r), rtol=1e-11, atol=1e-12)
    step = bd.gauss_newton_step(_exp_residual, **opts)(p, t, y)
    ref = np.stack([-np.linalg.lstsq(J[b], r[b], rcond=None)[0] for b in range(30)])
    np.testing.assert_allclose(step, ref, rtol=1e-8, atol=1e-10)
    lam = 0.3
    damped = bd.gauss_newton_step(_exp_residual, damped=True, **opts)(p, t, y, lam)
    A = np.einsum("bki,bkj->bij", J, J) + lam * np.eye(3)
    ref = -np.linalg.solve(A, np.einsum("bki,bk->bi", J, r)[..., None])[..., 0]
    np.testing.assert_allclose(damped, ref, rtol=1e-9, atol=1e-12)


def test_gauss_newton_iteration_fits_exactly():
    t = np.linspace(0.0, 2.0, 7)
    y = 1.5 * np.exp(-0.8 * t) + 0.3
    p = np.tile([1.0, -0.5, 0.0], (4, 1)) + np.linspace(0, 0.2, 4)[:, None]
    step = bd.gauss_newton_step(_exp_residual, damped=True, in_axes=(0, None, None))
    for _ in range(40):
        p = p + step(p, t, y, 1e-3)
    np.testing.assert_allclose(p, np.tile([1.5, -0.8, 0.3], (4, 1)), rtol=1e-8)


def test_steps_with_several_arguments_and_on_dask():
    def F(x, z):
        return np.stack([x[0] + z[0] ** 2 - 3.0, x[0] * z[0] - 1.0])

    x, z = np.array([[1.0], [2.0]]), np.array([[1.0], [0.5]])
    sx, sz = bd.newton_step(F, argnums=(0, 1), backend="numpy")(x, z)
    for b in range(2):
        J = np.array([[1.0, 2 * z[b, 0]], [z[b, 0], x[b, 0]]])
        ref = -np.linalg.solve(J, F(x[b], z[b]))
        np.testing.assert_allclose([sx[b, 0], sz[b, 0]], ref, rtol=1e-13)
    da = pytest.importorskip("dask.array")
    y = _points(10, np.random.default_rng(3))
    lam = np.linspace(0.1, 1.0, 10)
    step = bd.newton_step(_residual, damped=True, in_axes=(0, None), backend="numpy")
    got = step(da.from_array(y, chunks=4), Y_OLD, da.from_array(lam, chunks=4))
    np.testing.assert_allclose(got.compute(scheduler="sync"), _newton_reference(y, lam),
                               rtol=1e-9)


def test_step_errors_say_what_to_do():
    with pytest.raises(ShapeError, match="square system.*gauss_newton_step"):
        bd.newton_step(lambda x: np.stack([x[0], x[1], x[0] * x[1]]))(np.ones((2, 2)))
    with pytest.raises(ShapeError, match="damping"):
        bd.newton_step(lambda x: x ** 2 - 1.0, damped=True)(np.ones((4, 2)), np.ones(3))
