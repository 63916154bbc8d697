"""SciPy hooks (``batchdiff.scipy``) and least-squares index sets (``batchdiff.Terms``).

Oracles: Jacobians written out by hand, central differences, and SciPy's own solvers
reaching known solutions.
"""
import numpy as np
import pytest

import batchdiff as bd

scipy = pytest.importorskip("scipy")
from scipy.integrate import solve_ivp  # noqa: E402
from scipy.optimize import least_squares, minimize  # noqa: E402


def _central(F, x, h=1e-6):
    cols = []
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = h
        cols.append((np.asarray(F(x + e)) - np.asarray(F(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def _robertson(t, y, k1=0.04):
    return np.stack([-k1 * y[0] + 1e4 * y[1] * y[2],
                     k1 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                     3e7 * y[1] ** 2])


def _robertson_jac(y, k1=0.04):
    return np.array([[-k1, 1e4 * y[2], 1e4 * y[1]],
                     [k1, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                     [0.0, 6e7 * y[1], 0.0]])


@pytest.mark.parametrize("sparse", [False, True])
def test_ivp_jacobian_matches_the_hand_written_one_and_integrates(sparse):
    jac = bd.scipy.ivp_jacobian(_robertson, sparse=sparse)
    y = np.array([0.9, 2e-5, 0.1])
    J = jac(0.3, y, 0.05)
    J = J.toarray() if sparse else J
    np.testing.assert_allclose(J, _robertson_jac(y, 0.05), rtol=1e-14)
    sol = solve_ivp(_robertson, (0.0, 100.0), [1.0, 0.0, 0.0], method="BDF", rtol=1e-7,
                    atol=1e-10, jac=jac, args=(0.04,))
    ref = solve_ivp(_robertson, (0.0, 100.0), [1.0, 0.0, 0.0], method="BDF", rtol=1e-7,
                    atol=1e-10, jac=lambda t, y, k: _robertson_jac(y, k), args=(0.04,))
    assert sol.success
    np.testing.assert_allclose(sol.y[:, -1], ref.y[:, -1], rtol=1e-5, atol=1e-10)


def test_ivp_jac_sparsity_is_the_structure():
    def lorenz96(t, y):
        return (np.roll(y, -1) - np.roll(y, 2)) * np.roll(y, 1) - y + 8.0

    S = bd.scipy.ivp_jac_sparsity(lorenz96, 0.0, np.ones(6))
    dense = _central(lambda y: lorenz96(0.0, y), np.linspace(0.5, 1.5, 6))
    np.testing.assert_array_equal(S.toarray() != 0, np.abs(dense) > 1e-9)


def test_minimize_derivatives_against_closed_forms_and_minimize():
    def f(x, a):
        return np.sum(a * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    d = bd.scipy.minimize_derivatives(f)
    x, a, p = np.array([0.3, -0.2, 0.8]), 100.0, np.array([1.0, -2.0, 0.5])
    g_ref = _central(lambda z: f(z, a), x)
    H_ref = _central(lambda z: d["jac"](z, a), x)
    np.testing.assert_allclose(d["jac"](x, a), g_ref, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(d["hess"](x, a), H_ref, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(d["hessp"](x, p, a), H_ref @ p, rtol=1e-7, atol=1e-6)
    res = minimize(f, np.zeros(4), args=(a,), method="trust-krylov", jac=d["jac"],
                   hessp=d["hessp"])
    assert res.success
    np.testing.assert_allclose(res.x, np.ones(4), rtol=1e-6)


def test_least_squares_jacobian_fits():
    t = np.linspace(0.0, 2.0, 9)
    y = 2.0 * np.exp(-1.3 * t)

    def r(p, t, y):
        return p[0] * np.exp(p[1] * t) - y

    jac = bd.scipy.least_squares_jacobian(r)
    p = np.array([1.0, -0.5])
    np.testing.assert_allclose(jac(p, t, y), _central(lambda q: r(q, t, y), p), rtol=1e-7)
    fit = least_squares(r, p, jac=jac, args=(t, y))
    np.testing.assert_allclose(fit.x, [2.0, -1.3], rtol=1e-8)


# -- Terms: residuals over index sets ----------------------------------------------------
def _project(p, obs):
    """A camera (rotation angle, translation 2, focal) sees a 2-D point (2): 1-D image."""
    c, s = np.cos(p[0]), np.sin(p[0])
    x = c * p[4] - s * p[5] + p[1]
    z = s * p[4] + c * p[5] + p[2]
    return np.stack([p[3] * x / z - obs[0], 0.1 * (p[3] - 1.0)])


def _problem(rng, n_cams=4, n_pts=7, n_obs=20):
    cams = np.column_stack([rng.uniform(-0.2, 0.2, n_cams), rng.uniform(-1, 1, n_cams),
                            rng.uniform(4, 6, n_cams), rng.uniform(0.9, 1.1, n_cams)])
    pts = rng.uniform(-1, 1, (n_pts, 2))
    cam_of = rng.integers(0, n_cams, n_obs)
    pt_of = rng.integers(0, n_pts, n_obs)
    index = np.column_stack([cam_of[:, None] * 4 + np.arange(4),
                             n_cams * 4 + pt_of[:, None] * 2 + np.arange(2)])
    params = np.concatenate([cams.ravel(), pts.ravel()])
    obs = rng.normal(size=(n_obs, 1))
    return index, params, obs


def test_terms_assemble_the_problems_jacobian():
    rng = np.random.default_rng(0)
    index, params, obs = _problem(rng)
    terms = bd.Terms(_project, index, params.size, data=(obs,))

    def full(q):
        return np.concatenate([_project(q[index[t]], obs[t]) for t in range(len(index))])

    r, J = terms.residuals_and_jacobian(params)
    np.testing.assert_allclose(r, full(params), rtol=1e-13)
    assert J.shape == (2 * len(index), params.size) and J.format == "csr"
    dense = _central(full, params)
    np.testing.assert_allclose(J.toarray(), dense, rtol=1e-6, atol=1e-7)
    # only structural non-zeros are stored: the second residual reads the focal length
    assert J.nnz == len(index) * (6 + 1)
    S = terms.jac_sparsity()
    np.testing.assert_array_equal(S.toarray() != 0, J.toarray() != 0)
    # a second call rewrites the values in the same structure
    r2, J2 = terms.residuals_and_jacobian(params * 1.01)
    np.testing.assert_array_equal(J2.indices, J.indices)
    np.testing.assert_allclose(J2.toarray(), _central(full, params * 1.01), rtol=1e-6,
                               atol=1e-7)
    r3, JtJ, Jtr = terms.gauss_newton(params)
    np.testing.assert_allclose(JtJ.toarray(), dense.T @ dense, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(Jtr, dense.T @ r, rtol=1e-6, atol=1e-6)


def test_terms_with_a_repeated_parameter_add_their_derivatives():
    index = np.array([[0, 0], [0, 1], [1, 1]])
    terms = bd.Terms(lambda p: p[0] * p[1] + p[1], index, 2, backend="numpy")
    x = np.array([2.0, 3.0])
    J = terms.jacobian(x).toarray()
    # term 0 is x0² + x0: 2 x0 + 1; term 1 is x0 x1 + x1; term 2 is x1² + x1
    np.testing.assert_allclose(J, [[5.0, 0.0], [3.0, 3.0], [0.0, 7.0]])


def test_terms_solve_a_least_squares_problem_with_scipy():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 5, 200)
    x = rng.uniform(-1, 1, 200)
    a_true, b_true = rng.normal(size=5), rng.normal(size=5)
    y = a_true[groups] * np.exp(0.5 * x) + b_true[groups]
    index = np.stack([groups, 5 + groups], axis=1)
    terms = bd.Terms(lambda p, x, y: p[0] * np.exp(0.5 * x) + p[1] - y, index, 10,
                     data=(x, y))
    fit = least_squares(terms.residuals, np.zeros(10), jac=terms.jacobian,
                        jac_sparsity=None, method="trf", tr_solver="lsmr")
    np.testing.assert_allclose(fit.x, np.concatenate([a_true, b_true]), rtol=1e-6,
                               atol=1e-8)


def test_terms_errors_say_what_to_do():
    f = lambda p: p[0] - 1.0  # noqa: E731
    with pytest.raises(ValueError, match=r"\(T, k\) integer array"):
        bd.Terms(f, np.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="outside 0 .. 1"):
        bd.Terms(f, np.array([[0], [2]]), 2)
    with pytest.raises(ValueError, match="one entry per term"):
        bd.Terms(f, np.array([[0], [1]]), 2, data=(np.ones(3),))
    with pytest.raises(ValueError, match=r"params must have shape \(2,\)"):
        bd.Terms(f, np.array([[0], [1]]), 2).residuals(np.ones(3))


def test_constraint_derivatives_for_trust_constr():
    def c(x):
        return np.stack([x[0] * x[1] * x[2], np.sin(x[0]) + x[1] ** 2])

    d = bd.scipy.constraint_derivatives(c)
    x, v = np.array([0.3, -0.7, 1.1]), np.array([2.0, -0.5])
    np.testing.assert_allclose(d["jac"](x), _central(c, x), rtol=1e-7, atol=1e-8)
    lagrangian_grad = lambda z: d["jac"](z).T @ v  # noqa: E731
    np.testing.assert_allclose(d["hess"](x, v), _central(lagrangian_grad, x), rtol=1e-6,
                               atol=1e-7)
    # the point of a sphere of radius 2 closest to (3, 0, 4)
    from scipy.optimize import NonlinearConstraint
    sphere = NonlinearConstraint(lambda x: np.stack([np.sum(x * x)]), 4.0, 4.0,
                                 **bd.scipy.constraint_derivatives(
                                     lambda x: np.stack([np.sum(x * x)])))
    target = np.array([3.0, 0.0, 4.0])
    res = minimize(lambda x: np.sum((x - target) ** 2), np.array([1.0, 1.0, 1.0]),
                   jac=lambda x: 2 * (x - target), hess=lambda x: 2 * np.eye(3),
                   method="trust-constr", constraints=[sphere])
    np.testing.assert_allclose(res.x, 2 * target / 5, atol=1e-5)


@pytest.mark.parametrize("arrangement", ["increasing", "decreasing", "mixed"])
def test_terms_assemble_whatever_order_the_index_lists_parameters(arrangement):
    """The terms' values go to the CSR data as they stand (each term's parameters in
    increasing order), by one small permutation shared by every term (all decreasing),
    or by a scatter (orders that differ from term to term): the same matrix each way."""
    from batchdiff.terms import _IDENTITY
    rng = np.random.default_rng(3)
    n, T = 12, 40
    index = np.stack([rng.choice(n, 3, replace=False) for _ in range(T)])
    if arrangement == "increasing":
        index.sort(axis=1)
    elif arrangement == "decreasing":
        index = -np.sort(-index, axis=1)
    f = lambda p: np.stack([p[0] * p[1] + p[2] ** 2, np.sin(p[1]) * p[2]])  # noqa: E731
    terms = bd.Terms(f, index, n, backend="numpy")
    x = rng.normal(size=n)
    J = terms.jacobian(x)
    full = lambda q: np.concatenate([f(q[i]) for i in index])  # noqa: E731
    np.testing.assert_allclose(J.toarray(), _central(full, x), rtol=1e-6, atol=1e-7)
    local = terms._scatter[4]
    if arrangement == "increasing":
        assert local is _IDENTITY
    elif arrangement == "decreasing":
        assert local is not None and local is not _IDENTITY
    else:
        assert local is None
