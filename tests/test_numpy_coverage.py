"""Everyday NumPy on traced values: remainders and rounding, var/std, split/diff/gradient,
pad, sort, select, linspace and friends.

Oracles: NumPy's own function on the plain point for the values (bit for bit where
NumPy's algorithm is followed), central differences of that plain function for first
derivatives, central differences of the (checked) Jacobian for the Hessian, and closed
forms (mpmath for sinc) where differences cannot reach.
"""
import math
import re

import mpmath
import numpy as np
import pytest
import scipy.special

import batchdiff as bd
from batchdiff.numpy_functions import sorting_network

H = 1e-6


def _plain(f, X):
    return np.stack([np.asarray(f(x), dtype=np.float64) for x in X])


def _differences(f, X):
    """d f / d x by central differences, shaped (B, *out, *in)."""
    cols = []
    for k in np.ndindex(X.shape[1:]):
        E = np.zeros_like(X)
        E[(slice(None),) + k] = H
        cols.append((_plain(f, X + E) - _plain(f, X - E)) / (2 * H))
    return np.stack(cols, axis=-1).reshape(cols[0].shape + X.shape[1:])


def check(f, X, exact=False, hessian=True):
    """Values against NumPy, the Jacobian against differences of ``f``, the Hessian
    against differences of the Jacobian; on the reference executor."""
    value, jac = bd.value_and_jacobian(f, backend="numpy")(X)
    ref = _plain(f, X)
    assert value.shape == ref.shape
    if exact:
        np.testing.assert_array_equal(value, ref)
        np.testing.assert_array_equal(np.signbit(value), np.signbit(ref))
    else:
        np.testing.assert_allclose(value, ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(jac, _differences(f, X), rtol=1e-6, atol=1e-6)
    if hessian:
        J = bd.jacobian(f, backend="numpy")
        cols = []
        for k in range(X.shape[1]):
            E = np.zeros_like(X)
            E[:, k] = H
            cols.append((J(X + E) - J(X - E)) / (2 * H))
        np.testing.assert_allclose(bd.hessian(f, backend="numpy")(X), np.stack(cols, -1),
                                   rtol=1e-5, atol=1e-5)


rng = np.random.default_rng(11)
X6 = rng.uniform(-2.0, 2.0, size=(5, 6))
AWAY_FROM_ZERO = np.sign(X6) * (np.abs(X6) + 0.3)     # divisors: quotients' jumps far apart

CASES = {
    # remainders and quotients (NumPy's npy_divmod, bit for bit)
    "mod-ops": (lambda x: np.stack([x[0] % x[1], x[2] % -0.7, 3.0 % x[3], x[4] // x[5],
                                    -5.0 // x[1], *divmod(x[2], x[3]), *divmod(2.5, x[0])]),
                AWAY_FROM_ZERO, True),
    "mod-ufuncs": (lambda x: np.concatenate([np.mod(x[:3], x[3:]), np.remainder(x, 0.9),
                                             np.floor_divide(x[3:], x[:3]), *np.divmod(x, -1.3),
                                             np.fmod(x[:3], x[3:])]), AWAY_FROM_ZERO, True),
    "round": (lambda x: np.concatenate([np.round(x * 10, 1), np.around(x * 100, -1), x.round(2),
                                        np.round(x), np.fix(3 * x), np.atleast_1d(round(x[0] * 5, 1)),
                                        bd.numpy.round(x[:2], 1)]), X6, True),
    # statistics
    "var-std": (lambda x: np.concatenate([np.atleast_1d(np.var(x)), np.std(x.reshape(2, 3), 0),
                                          np.var(x.reshape(2, 3), axis=1, ddof=1),
                                          x.reshape(3, 2).std(axis=1, ddof=1).ravel(),
                                          np.var(x.reshape(2, 3), keepdims=True).ravel(),
                                          np.atleast_1d(x.var())]), X6, False),
    # splitting and differences
    "split": (lambda x: np.concatenate([np.split(x, 2)[1], np.array_split(x, 4)[3],
                                        np.hsplit(x.reshape(2, 3), [1])[1].ravel(),
                                        np.vsplit(x.reshape(2, 3), 2)[0].ravel(),
                                        np.dsplit(x.reshape(1, 2, 3), 3)[2].ravel()]) ** 2,
              X6, True),
    "diff": (lambda x: np.concatenate([np.diff(x ** 2), np.diff(x, n=2),
                                       np.diff(x.reshape(2, 3), axis=0).ravel(),
                                       np.diff(x, prepend=x[0] ** 2, append=1.5)]), X6, True),
    "gradient": (lambda x: np.concatenate([np.gradient(x ** 2), np.gradient(x ** 3, 0.5),
                                           np.gradient(x ** 2, 0.25, edge_order=2),
                                           *(g.ravel() for g in np.gradient(
                                               np.sin(x.reshape(2, 3)), 2.0, 0.5)),
                                           np.gradient(x.reshape(3, 2) ** 3, axis=0).ravel()]),
                 X6, False),
    # padding, sorting, selection
    "pad": (lambda x: np.concatenate([np.pad(x.reshape(2, 3), ((1, 2), (2, 1)), mode=m).ravel()
                                      for m in ("constant", "edge", "reflect", "symmetric",
                                                "wrap", "mean")]
                                     + [np.pad(x, 2, constant_values=(x[0], 3.0))]) ** 2,
            X6, True),
    "sort": (lambda x: np.concatenate([np.sort(x ** 3), np.sort(x.reshape(2, 3), axis=0).ravel(),
                                       np.sort(x.reshape(3, 2), axis=None)]), X6, True),
    "select": (lambda x: np.select([x > 0.5, x < -1.0], [x ** 2, np.sin(x)], default=-x),
               X6, True),
    "reshaping": (lambda x: np.concatenate([np.append(x, x[:2] ** 2),
                                            np.rot90(x.reshape(2, 3)).ravel(),
                                            np.rollaxis(x.reshape(1, 2, 3), 2).ravel(),
                                            np.atleast_3d(x[0] * x[1]).ravel()]), X6, True),
    "nan-aware": (lambda x: np.concatenate([np.fmax(x, 0.5), np.fmin(x[:3], x[3:]),
                                            np.fmax(np.nan, x), np.fmin(x, np.nan),
                                            np.nan_to_num(np.log(x), nan=-1.0),
                                            np.nan_to_num(np.where(x > 0.5, np.inf, x),
                                                          posinf=7.0),
                                            np.nan_to_num(np.where(x < 0, -np.inf, x))]),
                  X6, True),
    "sinc-angles": (lambda x: np.concatenate([np.sinc(x), np.degrees(x), np.radians(x)]),
                    X6, True),
    "linspace": (lambda x: np.concatenate([np.linspace(x[0], x[1], 5),
                                           np.linspace(x[:2], x[2:4], 4, endpoint=False,
                                                       axis=1).ravel(),
                                           np.linspace(x[4], 2.0, 1),
                                           np.linspace(x[4], x[5], 3, retstep=True)[0]]),
                 X6, True),
    "complex-parts": (lambda x: np.real(x) + np.imag(x) + np.conj(x) * x.real + x.conj()
                      + x.imag, X6, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_derivatives(name):
    f, X, exact = CASES[name]
    with np.errstate(all="ignore"):
        check(f, X, exact)


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("reduction", [np.max, np.min, np.amax, np.sum, np.prod, np.mean,
                                       np.var, np.std])
def test_keepdims_keeps_numpys_shape(reduction, axis):
    X = rng.uniform(1.0, 2.0, size=(2, 6))

    def f(x):
        return reduction(x.reshape(2, 3), axis=axis, keepdims=True)
    value, _ = bd.value_and_jacobian(f, backend="numpy")(X)
    np.testing.assert_allclose(value, _plain(f, X), rtol=1e-14)
    for method in ("max", "min", "sum", "mean"):
        shape = bd.jacobian(lambda x: getattr(x.reshape(2, 3), method)(keepdims=True),
                            backend="numpy")(X).shape
        assert shape == (2, 1, 1, 6)


def test_remainder_matches_numpy_bit_for_bit_at_special_values():
    values = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 6.0, 1e-300, 7e300, np.inf, -np.inf,
              np.nan, 0.1, -0.3]
    A, B = (g.ravel() for g in np.meshgrid(values, values))
    X = np.stack([A, B], axis=1)
    F = lambda x: np.stack([x[0] % x[1], x[0] // x[1], *np.divmod(x[0], x[1])])
    value, _ = bd.value_and_jacobian(F, backend="numpy")(X)
    with np.errstate(all="ignore"):
        ref = np.stack([np.remainder(A, B), np.floor_divide(A, B), *np.divmod(A, B)], axis=1)
    np.testing.assert_array_equal(value, ref)
    np.testing.assert_array_equal(np.signbit(value), np.signbit(ref))


def test_round_matches_numpy_bit_for_bit():
    X = rng.normal(scale=1e3, size=(50, 3))
    F = lambda x: np.concatenate([np.round(x, d) for d in (-12, -3, -1, 0, 1, 2, 9, 10, 12)])
    value, _ = bd.value_and_jacobian(F, backend="numpy")(X)
    np.testing.assert_array_equal(value, _plain(F, X))


def test_remainder_derivative_at_exact_multiples():
    """d(a mod b) = (1, -(a // b)) there too; the quotient's derivative is zero."""
    X = np.array([[6.0, 3.0], [-6.0, 3.0], [6.0, -2.0], [0.0, 4.0], [-7.0, 2.0]])
    J = bd.jacobian(lambda x: np.stack([x[0] % x[1], x[0] // x[1]]), backend="numpy")(X)
    np.testing.assert_array_equal(J[:, 0, 0], 1.0)
    np.testing.assert_array_equal(J[:, 0, 1], -np.floor_divide(X[:, 0], X[:, 1]))
    np.testing.assert_array_equal(J[:, 1], 0.0)
    assert not bd.hessian(lambda x: x[0] % x[1], backend="numpy")(X).any()


def test_sinc_derivatives_at_and_near_zero():
    X = np.array([[0.0], [1e-12], [-3e-5], [0.05], [-0.16], [0.2], [1.7]])
    sinc = lambda t: mpmath.sinc(mpmath.pi * t) if t else mpmath.mpf(1)
    mpmath.mp.dps = 40
    for order, transform in enumerate([bd.grad, bd.hessian, lambda f, **k: bd.jacobian(
            bd.hessian(f), **k)], start=1):
        got = transform(lambda x: np.sinc(x[0]), backend="numpy")(X).ravel()
        ref = [float(mpmath.diff(sinc, mpmath.mpf(x), order)) for x in X[:, 0]]
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * math.pi ** order)
    assert np.isfinite(got).all()


def test_sort_network_sorts_every_length():
    r = np.random.default_rng(3)
    for n in range(0, 33):
        for _ in range(3):
            v = list(r.integers(0, 4, size=n))            # ties included
            for i, j in sorting_network(n):
                assert i < j
                v[i], v[j] = min(v[i], v[j]), max(v[i], v[j])
            assert v == sorted(v)


def test_sort_puts_nans_last_and_moves_derivatives_with_elements():
    X = np.array([[3.0, np.nan, -1.0, 2.0], [0.5, 0.1, 0.3, 0.2]])
    value, J = bd.value_and_jacobian(np.sort, backend="numpy")(X)
    np.testing.assert_array_equal(value, np.sort(X, axis=1))
    perm = np.argsort(X, axis=1)
    np.testing.assert_array_equal(J, np.eye(4)[perm])


def test_partition_meets_its_contract():
    X = rng.normal(size=(4, 7))
    value, J = bd.value_and_jacobian(lambda x: np.partition(x, 3), backend="numpy")(X)
    np.testing.assert_array_equal(value[:, 3], np.partition(X, 3, axis=1)[:, 3])
    assert (value[:, :3] <= value[:, 3:4]).all() and (value[:, 4:] >= value[:, 3:4]).all()
    np.testing.assert_array_equal(J, np.eye(7)[np.argsort(X, axis=1)])


@pytest.mark.parametrize("name", ["mod-ops", "var-std", "sort", "sinc-angles"])
def test_float32_inputs(name):
    f, X, _ = CASES[name]
    X32 = X.astype(np.float32)
    value, jac = bd.value_and_jacobian(f, backend="numpy")(X32)
    assert value.dtype == np.float32 and jac.dtype == np.float32
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(value, _plain(f, X32.astype(np.float64)), rtol=2e-5,
                                   atol=2e-5)
        np.testing.assert_allclose(jac, _differences(f, X32.astype(np.float64)), rtol=1e-3,
                                   atol=1e-3)


def combined(x):
    """Many of the functions above in one graph, for the compiled executors."""
    q, p = np.split(x, 2)
    spread = np.std(q) + np.var(p, ddof=1)
    steps = np.diff(np.sort(x)) % 0.9 + np.gradient(x ** 2, 0.5, edge_order=2)[1:]
    picked = np.select([x > 0.0], [np.sinc(x)], default=np.fmax(x, -0.5))
    ramp = np.linspace(x[0], x[1], 3) + np.pad(p, 1, mode="reflect")[1:-1].sum() // 1.0
    return np.sum(steps ** 2) + spread * np.sum(picked) + np.sum(ramp * np.round(x[:3], 1))


@pytest.fixture(scope="module")
def combined_reference():
    X = rng.uniform(-1.5, 1.5, size=(6, 4))
    return X, bd.value_grad_and_hessian(combined, backend="numpy")(X)


def test_combined_function_on_the_reference_executor(combined_reference):
    X, (value, grad, hess) = combined_reference
    np.testing.assert_allclose(value, _plain(combined, X), rtol=1e-13)
    np.testing.assert_allclose(grad, _differences(combined, X), rtol=1e-6, atol=1e-6)
    G = bd.grad(combined, backend="numpy")
    cols = [(G(X + H * np.eye(4)[k]) - G(X - H * np.eye(4)[k])) / (2 * H) for k in range(4)]
    np.testing.assert_allclose(hess, np.stack(cols, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["replay", "compiled"])
def test_combined_function_on_the_numba_executors(combined_reference, method):
    X, reference = combined_reference
    got = bd.value_grad_and_hessian(combined, backend="numba", method=method)(X)
    for g, r in zip(got, reference):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use,names", [
    (lambda x: np.array([x[0], x[1]]), [r"np\.array/np\.asarray", r"np\.stack", r"bd\.numpy\.array"]),
    (lambda x: np.asarray([x[0]]), [r"np\.array/np\.asarray"]),
    (lambda x: np.mean([x[0], x[1]]), [r"np\.mean\(\.\.\.\)", r"np\.stack"]),
    (lambda x: np.r_[x[0], x[1]], [r"np\.r_\[\.\.\.\]"]),
    (lambda x: np.c_[x, x], [r"np\.c_\[\.\.\.\]"]),
    (lambda x: scipy.special.logsumexp([x[0], x[1]]),
     [r"scipy\.special\.logsumexp\(\.\.\.\)", r"batchdiff\.special\.logsumexp"]),
])
def test_arrays_from_traced_values_name_the_call_and_the_fix(use, names):
    with pytest.raises(bd.TracerConversionError) as info:
        bd.grad(lambda x: np.sum(use(x)), backend="numpy")(X6)
    for name in names:
        assert re.search(name, str(info.value)), str(info.value)


@pytest.mark.parametrize("use,error,match", [
    (lambda x: x * 1j, bd.UnsupportedOperationError, "complex numbers are not supported"),
    (lambda x: np.pad(x, 1, mode="maximum"), bd.UnsupportedOperationError, "mode='maximum'"),
    (lambda x: np.partition(x, 6), ValueError, "out of bounds"),
    (lambda x: np.select([x > 0], [x, x]), ValueError, "same length"),
    (lambda x: np.gradient(x, np.arange(6.0)), bd.UnsupportedOperationError, "scalar spacings"),
    (lambda x: np.gradient(x[:2], edge_order=2), ValueError, "too small"),
    (lambda x: np.var(x, out=np.zeros(())), bd.UnsupportedOperationError, "out="),
    (lambda x: np.linspace(x[0], x[1], 3, dtype=int), bd.UnsupportedOperationError, "dtype"),
    (lambda x: round(x[0]), bd.TracerConversionError, r"np\.round\(v\)"),
])
def test_bad_inputs(use, error, match):
    with pytest.raises(error, match=match):
        bd.grad(lambda x: np.sum(use(x)), backend="numpy")(X6)
