"""Special functions on traced values (``batchdiff.special``, ``scipy.special``'s ufuncs,
``np.logaddexp``): accuracy against mpmath, derivatives of first and second order against
mpmath's, special values as SciPy's, every CPU executor against the reference
interpreter, and a likelihood Hessian against its closed form."""
import numpy as np
import pytest
from mpmath import mp
from scipy import special as sc

import batchdiff as bd

mp.dps = 40
RNG = np.random.default_rng(2026)
POSITIVE = np.concatenate([RNG.uniform(0.0, 3.0, 600), np.geomspace(1e-8, 1e6, 600),
                           RNG.uniform(0.9, 2.0, 400)])
REAL = np.concatenate([RNG.uniform(-40.0, 40.0, 800), RNG.uniform(-3.0, 3.0, 600)])


def _log_ndtr(v):
    return mp.log(mp.ncdf(v)) if v < 0 else mp.log1p(-mp.ncdf(-v))


# name: (function of one traced scalar, mpmath function, points, max ulp in float64)
ACCURACY = {
    "digamma": (sc.psi, mp.digamma, POSITIVE, 4),
    "digamma_negative": (sc.digamma, mp.digamma, -RNG.uniform(0.05, 20.0, 800), None),
    "trigamma": (lambda t: bd.special.polygamma(1, t), lambda v: mp.polygamma(1, v),
                 POSITIVE, 4),
    "polygamma_3": (lambda t: bd.special.polygamma(3, t), lambda v: mp.polygamma(3, v),
                    POSITIVE, 8),
    "gammaln": (sc.gammaln, mp.loggamma, POSITIVE, 4),
    "erf": (sc.erf, mp.erf, REAL / 5.0, 2),
    "erfc": (sc.erfc, mp.erfc, REAL / 3.0, 4),
    "expit": (sc.expit, lambda v: 1 / (1 + mp.exp(-v)), REAL, 2),
    "logit": (sc.logit, lambda v: mp.log(v / (1 - v)), RNG.uniform(0.0, 1.0, 1000), 2),
    "ndtr": (sc.ndtr, mp.ncdf, REAL, 4),
    "log_ndtr": (sc.log_ndtr, _log_ndtr,
                 np.concatenate([REAL, -np.geomspace(1.0, 1e5, 300)]), 4),
    "logaddexp": (lambda t: np.logaddexp(t, 0.5), lambda v: mp.log(mp.exp(v) + mp.exp(0.5)),
                  REAL, 4),
}


def _values(fn, x, **options):
    value, _ = bd.value_and_grad(lambda t: fn(t[0]), **options)(x[:, None])
    return value


def _ulp(value, exact):
    ok = np.isfinite(exact)
    return np.abs(value[ok] - exact[ok]) / np.spacing(np.abs(exact[ok]))


@pytest.mark.parametrize("name", sorted(ACCURACY))
def test_accuracy_against_mpmath(name):
    """The reference interpreter's float64 values within a few ulp of mpmath's (digamma
    below zero: near its roots between the poles, only relative to the terms)."""
    fn, exact_fn, x, bound = ACCURACY[name]
    exact = np.array([float(exact_fn(mp.mpf(float(v)))) for v in x])
    value = _values(fn, x, backend="numpy")
    if bound is None:
        scale = np.abs(np.array([float(mp.digamma(1 - v)) for v in x])) + np.pi / np.abs(
            np.tan(np.pi * x))
        assert np.max(np.abs(value - exact) / scale) < 1e-14
    else:
        assert _ulp(value, exact).max() <= bound, name


# name: (function, mpmath function, points): first and second derivatives against mpmath
DERIVATIVES = {
    "gammaln": (sc.gammaln, mp.loggamma, [0.3, 1.0, 1.4616, 2.0, 7.5, 30.0]),
    "digamma": (sc.psi, mp.digamma, [0.2, 1.2, 1.4616, 1.9, 3.0, 12.0, -0.7, -2.5]),
    "erf": (sc.erf, mp.erf, [-2.0, -0.3, 0.0, 0.7, 3.0]),
    "erfc": (sc.erfc, mp.erfc, [-1.0, 0.0, 2.0, 5.0]),
    "expit": (sc.expit, lambda v: 1 / (1 + mp.exp(-v)), [-30.0, -1.0, 0.0, 2.0, 30.0]),
    "logit": (sc.logit, lambda v: mp.log(v / (1 - v)), [0.01, 0.3, 0.5, 0.8, 0.99]),
    "ndtr": (sc.ndtr, mp.ncdf, [-8.0, -1.0, 0.0, 2.0]),
    "log_ndtr": (sc.log_ndtr, _log_ndtr, [-45.0, -20.0, -3.0, -0.5, 0.0, 4.0]),
    "xlogy": (lambda t: sc.xlogy(1.5 + t * t, 2.0 + t), lambda v: (1.5 + v * v) * mp.log(2 + v),
              [-1.0, 0.0, 0.5, 3.0]),
    "xlogy_at_x0": (lambda t: sc.xlogy(t, 0.5 + t * t), lambda v: v * mp.log(0.5 + v * v),
                    [0.0, 0.3]),         # d/dx at x = 0 is log y (found by the fuzzer)
    "xlog1py_at_x0": (lambda t: sc.xlog1py(t, 0.5 + t * t), lambda v: v * mp.log1p(0.5 + v * v),
                      [0.0, -0.4]),
    "logaddexp2": (lambda t: np.logaddexp2(t, 1.0 - t),
                   lambda v: mp.log(2 ** v + 2 ** (1 - v)) / mp.log(2), [-3.0, 0.5, 0.0, 4.0]),
    "polygamma_2": (lambda t: bd.special.polygamma(2, t), lambda v: mp.polygamma(2, v),
                    [0.4, 1.0, 2.5, 15.0]),
}


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_derivatives_against_mpmath(name):
    fn, exact_fn, points = DERIVATIVES[name]
    x = np.array(points)[:, None]
    grad = bd.grad(lambda t: fn(t[0]), backend="numpy")(x)[:, 0]
    hess = bd.hessian(lambda t: fn(t[0]), backend="numpy")(x)[:, 0, 0]
    for k, v in enumerate(points):
        d1 = float(mp.diff(exact_fn, mp.mpf(v)))
        d2 = float(mp.diff(exact_fn, mp.mpf(v), 2))
        assert grad[k] == pytest.approx(d1, rel=1e-11, abs=1e-13), (name, v)
        assert hess[k] == pytest.approx(d2, rel=1e-9, abs=1e-12), (name, v)


def test_special_values_as_scipy():
    x = np.array([[0.0], [-1.0], [-3.0], [np.inf], [-np.inf], [np.nan]])
    for fn in (sc.psi, sc.gammaln, sc.erf, sc.erfc, sc.expit, sc.ndtr, sc.log_ndtr):
        got = _values(fn, x[:, 0], backend="numpy")
        want = fn(x[:, 0])
        if fn is sc.gammaln:        # SciPy's -inf at -inf; the C library's (and CUDA's) +inf
            want[4] = np.inf
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=0, err_msg=fn.__name__)
    pairs = np.array([[np.inf, np.inf], [-np.inf, -np.inf], [np.inf, -np.inf],
                      [1000.0, 1000.0], [-1000.0, 3.0], [np.nan, 1.0]])
    got = bd.value_and_grad(lambda t: np.logaddexp(t[0], t[1]), backend="numpy")(pairs)[0]
    with np.errstate(invalid="ignore"):      # NumPy's own warning at (inf, inf)
        want = np.logaddexp(pairs[:, 0], pairs[:, 1])
    np.testing.assert_array_equal(got, want)
    got = bd.value_and_grad(lambda t: sc.xlogy(t[0], t[1]), backend="numpy")(
        np.array([[0.0, 0.0], [0.0, np.nan], [2.0, 0.0], [0.0, 3.0]]))[0]
    np.testing.assert_array_equal(got, [0.0, np.nan, -np.inf, 0.0])


def test_logaddexp_gradient_is_the_softmax_even_at_ties_and_overflow():
    pairs = np.array([[1000.0, 1000.0], [2.0, 2.0], [-1.0, 3.0]])
    grad = bd.grad(lambda t: np.logaddexp(t[0], t[1]), backend="numpy")(pairs)
    e = np.exp(pairs - pairs.max(axis=1, keepdims=True))
    np.testing.assert_allclose(grad, e / e.sum(axis=1, keepdims=True), rtol=1e-15)
    hess = bd.hessian(lambda t: np.logaddexp(t[0], t[1]), backend="numpy")(pairs[:2])
    np.testing.assert_allclose(hess, [[[0.25, -0.25], [-0.25, 0.25]]] * 2, rtol=1e-15)


def test_logsumexp_softmax_and_log_softmax():
    x = RNG.normal(size=(5, 2, 3)) * 3.0
    x[0, 0] = 800.0                                      # would overflow exp
    b = RNG.uniform(0.5, 2.0, (2, 3))

    def f(v):
        return np.stack([bd.special.logsumexp(v), bd.special.logsumexp(v, axis=1, b=b)[1],
                         bd.special.logsumexp(v, axis=0, keepdims=True)[0, 2],
                         bd.special.softmax(v, axis=1)[0, 1],
                         bd.special.log_softmax(v)[1, 2]])
    got = bd.value_and_jacobian(f, backend="numpy")(x)
    want = np.stack([sc.logsumexp(x, axis=(1, 2)), sc.logsumexp(x, axis=2, b=b)[:, 1],
                     sc.logsumexp(x, axis=1, keepdims=True)[:, 0, 2],
                     sc.softmax(x, axis=2)[:, 0, 1],
                     sc.log_softmax(x.reshape(5, -1), axis=1).reshape(x.shape)[:, 1, 2]], axis=1)
    np.testing.assert_allclose(got[0], want, rtol=1e-13)
    flat = x.reshape(5, -1)
    s = np.exp(flat - sc.logsumexp(flat, axis=1, keepdims=True))
    np.testing.assert_allclose(got[1][:, 0].reshape(5, -1), s, rtol=1e-13, atol=1e-300)
    hess = bd.hessian(lambda v: bd.special.logsumexp(v), backend="numpy")(flat[1:])
    expected = np.stack([np.diag(p) - np.outer(p, p) for p in s[1:]])
    np.testing.assert_allclose(hess, expected, rtol=1e-12, atol=1e-15)
    # on plain arrays: SciPy's own
    assert bd.special.logsumexp(flat[1]) == sc.logsumexp(flat[1])
    with pytest.raises(bd.UnsupportedOperationError, match="return_sign"):
        bd.grad(lambda v: bd.special.logsumexp(v, return_sign=True)[0], backend="numpy")(flat)


def test_polygamma_order_must_be_one_non_negative_integer():
    x = np.ones((2, 1))
    for n in (-1, 1.5, [1, 2]):
        with pytest.raises(ValueError, match="polygamma"):
            bd.grad(lambda t: bd.special.polygamma(n, t[0]), backend="numpy")(x)
    got = bd.value_and_grad(lambda t: bd.special.polygamma(1, t[0]), backend="numpy")(
        np.array([[0.0], [-1.5]]))[0]
    assert np.isnan(got).all()


def _likelihoods(theta, y, x):
    """Poisson and negative-binomial log-likelihoods of one observation, rate exp(θ·x)."""
    log_rate = theta[0] * x[0] + theta[1] * x[1]
    poisson = sc.xlogy(y, np.exp(log_rate)) - np.exp(log_rate) - sc.gammaln(y + 1.0)
    r = np.exp(theta[2])
    mu = np.exp(log_rate)
    negbin = (sc.gammaln(y + r) - sc.gammaln(r) - sc.gammaln(y + 1.0)
              + r * np.log(r / (r + mu)) + sc.xlogy(y, mu / (r + mu)))
    return poisson + negbin


def test_likelihood_hessian_against_closed_form():
    n = 7
    theta = np.column_stack([RNG.normal(0, 0.5, n), RNG.normal(0, 0.5, n), RNG.normal(0, 0.5, n)])
    y = RNG.poisson(3.0, n).astype(float)
    x = RNG.normal(size=(n, 2))
    hess = bd.hessian(_likelihoods, argnums=0, in_axes=(0, 0, 0), backend="numpy")(theta, y, x)
    for k in range(n):
        a = theta[k]
        lam = np.exp(a[:2] @ x[k])
        r = np.exp(a[2])
        # Poisson: -λ x xᵀ
        H = np.zeros((3, 3))
        H[:2, :2] = -lam * np.outer(x[k], x[k])
        # negative binomial in (η = θ·x, ρ = log r), then the chain rule to θ
        yk, mu = y[k], lam
        d_eta_eta = -r * mu * (r + yk) / (r + mu) ** 2
        d_eta_rho = r * mu * (yk - mu) / (r + mu) ** 2
        d_r = (sc.digamma(yk + r) - sc.digamma(r) + np.log(r / (r + mu)) + 1.0
               - (r + yk) / (r + mu))
        d_rr = (sc.polygamma(1, yk + r) - sc.polygamma(1, r) + 1.0 / r - 1.0 / (r + mu)
                + (yk - mu) / (r + mu) ** 2)
        d_rho_rho = r * d_r + r * r * d_rr
        H[:2, :2] += d_eta_eta * np.outer(x[k], x[k])
        H[:2, 2] += d_eta_rho * x[k]
        H[2, :2] += d_eta_rho * x[k]
        H[2, 2] += d_rho_rho
        np.testing.assert_allclose(hess[k], H, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def special_case():
    def f(v):
        return np.stack([sc.gammaln(1.5 + v[0] ** 2) + sc.psi(0.5 + v[1] ** 2) * sc.erf(v[2]),
                         sc.log_ndtr(3.0 * v[0]) + np.logaddexp(v[1], v[2]) + sc.expit(v[2])
                         + sc.erfc(v[1]) * sc.logit(0.5 + 0.4 * np.tanh(v[0]))])
    x = RNG.uniform(-2.0, 2.0, (300, 3))
    x[:3] = [[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0], [-15.0, np.inf, -np.inf]]
    return f, x


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", ["replay", "compiled"])
def test_every_executor_matches_reference(special_case, method, dtype):
    f, x = special_case
    x = x.astype(dtype)
    want = bd.value_and_jacobian(f, backend="numpy")(x)
    got = bd.value_and_jacobian(f, method=method)(x)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
