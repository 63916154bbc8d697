"""Fused transforms: value and derivatives from one tape and one kernel.

``value_and_jacobian``, ``value_and_hessian`` and ``value_grad_and_hessian`` are held
against f itself (the value), against the separate transforms on the whole corpus (each
tested against SymPy and finite differences in test_ops.py and test_properties.py), and
against central differences and closed forms of their own, on every CPU executor.
"""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff.errors import ShapeError
from corpus import CASES, SCALAR, points

EXECUTORS = [("numpy", "auto"), ("numba", "replay"), ("numba", "compiled")]


def _close(got, ref, tol=1e-11):
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref)
        for g, r in zip(got, ref):
            _close(g, r, tol)
    else:
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def _value(f, args, in_axes):
    """f on every point, by a Python loop (the oracle of the value)."""
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    batch = next(a.shape[0] for a, ax in zip(args, axes) if ax is not None)
    return np.array([np.asarray(f(*(a[i] if ax is not None else a
                                     for a, ax in zip(args, axes))), dtype=np.float64)
                     for i in range(batch)])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fused_results_are_the_value_and_the_separate_transforms(case):
    name, f, shapes, argnums, in_axes = case
    args = points(case, 9, np.float64, np.random.default_rng(3))
    opts = dict(in_axes=in_axes, backend="numpy")
    value = _value(f, args, in_axes)
    J = bd.jacobian(f, argnums, **opts)(*args)
    H = bd.hessian(f, argnums, **opts)(*args)
    _close(bd.value_and_jacobian(f, argnums, **opts)(*args), (value, J))
    _close(bd.value_and_hessian(f, argnums, **opts)(*args), (value, H))
    if name in SCALAR:
        _close(bd.value_grad_and_hessian(f, argnums, **opts)(*args), (value, J, H))


def _rosen(v):
    return np.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)


def _rosen_grad_hess(x):
    """The closed-form gradient and Hessian of the Rosenbrock function, per point."""
    n = x.shape[1]
    g = np.zeros_like(x)
    H = np.zeros(x.shape + (n,))
    for i in range(n - 1):
        a, b = x[:, i], x[:, i + 1]
        g[:, i] += -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
        g[:, i + 1] += 200.0 * (b - a * a)
        H[:, i, i] += 1200.0 * a * a - 400.0 * b + 2.0
        H[:, i, i + 1] += -400.0 * a
        H[:, i + 1, i] += -400.0 * a
        H[:, i + 1, i + 1] += 200.0
    return g, H


def _field(v):
    return np.stack([v[0] * np.exp(v[1]), np.sin(v[0] * v[2]) + v[1] ** 2, v[2] / (1 + v[0] ** 2)])


def _central_jacobian(F, X, h=1e-6):
    cols = []
    for k in range(X.shape[1]):
        e = np.zeros(X.shape[1])
        e[k] = h
        cols.append((np.array([F(x + e) for x in X]) - np.array([F(x - e) for x in X])) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_against_closed_forms_and_differences(backend, method, dtype):
    rng = np.random.default_rng(5)
    tol = 1e-9 if dtype == np.float64 else 2e-3
    X = rng.uniform(-1.5, 1.5, (40, 4)).astype(dtype)
    opts = dict(backend=backend, method=method)
    value, g, H = bd.value_grad_and_hessian(_rosen, **opts)(X)
    g_ref, H_ref = _rosen_grad_hess(X.astype(np.float64))
    assert value.dtype == g.dtype == H.dtype == dtype
    scale = 1 + np.abs(H_ref).max()
    np.testing.assert_allclose(value, [_rosen(x) for x in X.astype(np.float64)],
                               rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(g, g_ref, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(H, H_ref, rtol=tol, atol=tol * scale)
    v2, H2 = bd.value_and_hessian(_rosen, **opts)(X)
    np.testing.assert_array_equal(v2, value)
    np.testing.assert_array_equal(H2, H)

    Y = rng.uniform(-1, 1, (30, 3))
    y, J = bd.value_and_jacobian(_field, **opts)(Y.astype(dtype))
    assert y.shape == (30, 3) and J.shape == (30, 3, 3) and J.dtype == dtype
    np.testing.assert_allclose(y, [_field(x) for x in Y], rtol=tol, atol=tol)
    np.testing.assert_allclose(J, _central_jacobian(_field, Y), rtol=max(tol, 1e-7),
                               atol=max(tol, 1e-7))


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
def test_fused_write_into_out_buffers(backend, method):
    rng = np.random.default_rng(8)
    X = rng.uniform(-1, 1, (17, 4))
    for kind, f in [("value_and_jacobian", _field), ("value_and_hessian", _rosen),
                    ("value_grad_and_hessian", _rosen)]:
        Xk = X[:, :3] if f is _field else X
        ref = getattr(bd, kind)(f, backend="numpy")(Xk)
        buf = tuple(np.full_like(r, -1.0) for r in ref)
        got = getattr(bd, kind)(f, backend=backend, method=method)(Xk, out=buf)
        assert all(g is b for g, b in zip(got, buf))
        _close(buf, ref)


def test_fused_sparse_and_upper_triangle():
    X = np.random.default_rng(2).uniform(-1, 1, (6, 5))
    value, H = bd.value_and_hessian(_rosen, sparse=True, triangle="upper",
                                    backend="numpy")(X)
    dense = bd.hessian(_rosen, backend="numpy")(X)
    assert isinstance(H, bd.SparseResult) and H.nnz == 5 + 4     # diagonal, one above it
    np.testing.assert_allclose(value, [_rosen(x) for x in X], rtol=1e-12)
    for b in range(6):
        np.testing.assert_allclose(np.triu(H.to_dense()[b]), np.triu(dense[b]), atol=1e-12)
    v, g, Hs = bd.value_grad_and_hessian(_rosen, sparse=True, method="replay")(X)
    np.testing.assert_allclose(Hs.to_dense(), dense, atol=1e-12)
    y, J = bd.value_and_jacobian(_field, sparse=True, backend="numpy")(X[:, :3])
    np.testing.assert_allclose(J.to_dense(), bd.jacobian(_field, backend="numpy")(X[:, :3]))
    assert J.nnz == 7                       # d f1/d x2 and d f2/d x1 are structural zeros


def test_fused_with_several_arguments():
    def f(x, y):
        return np.stack([np.sum(x * y), x[0] * y[1] ** 2])

    rng = np.random.default_rng(4)
    x, y = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (5, 2))
    value, (Jx, Jy) = bd.value_and_jacobian(f, argnums=(0, 1), backend="numpy")(x, y)
    assert value.shape == (5, 2) and Jx.shape == Jy.shape == (5, 2, 2)
    ref = bd.jacobian(f, argnums=(0, 1), backend="numpy")(x, y)
    _close((Jx, Jy), ref)
    value, ((Hxx, Hxy), (Hyx, Hyy)) = bd.value_and_hessian(f, argnums=(0, 1),
                                                           backend="numpy")(x, y)
    _close(((Hxx, Hxy), (Hyx, Hyy)), bd.hessian(f, argnums=(0, 1), backend="numpy")(x, y))


def test_fused_tape_is_no_longer_than_the_separate_ones():
    """One tape shares what the value and the derivatives both compute: it is never
    longer than the separate tapes together, and shorter where they share work."""
    from batchdiff.tracer import trace

    X = np.ones((1, 4))
    for fused, separate, f in [("value_and_jacobian", ["jacobian"], _field),
                               ("value_and_hessian", ["hessian"], _rosen),
                               ("value_grad_and_hessian", ["grad", "hessian"], _rosen)]:
        x = X[:, :3] if f is _field else X
        value_ops = trace(f, [x.shape[1:]])[0].num_ops
        fused_tape = getattr(bd, fused)(f).tape(x)
        apart = value_ops + sum(getattr(bd, k)(f).tape(x).num_ops for k in separate)
        assert fused_tape.num_ops < apart, (fused, fused_tape.num_ops, apart)


def test_fused_errors_say_what_to_do():
    with pytest.raises(ShapeError, match="scalar output"):
        bd.value_grad_and_hessian(_field)(np.ones((2, 3)))
    with pytest.raises(ValueError, match="triangle='upper'"):
        bd.value_and_hessian(_rosen, triangle="upper")


def test_fused_on_dask_arrays():
    da = pytest.importorskip("dask.array")
    X = np.random.default_rng(6).uniform(-1, 1, (12, 4))
    value, g, H = bd.value_grad_and_hessian(_rosen, backend="numpy")(da.from_array(X, chunks=5))
    ref = bd.value_grad_and_hessian(_rosen, backend="numpy")(X)
    _close((value.compute(scheduler="sync"), g.compute(scheduler="sync"),
            H.compute(scheduler="sync")), ref)
