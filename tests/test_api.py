"""The public API contract of DESIGN.md, and the errors misuse gets.

Expected values come from independent oracles: closed forms worked out by hand, or
central finite differences of a plain-NumPy evaluation of the same per-point function
(the function run on ordinary ndarrays, one point at a time). batchdiff's own output is
never the expected value, except where two of its paths must agree (forward vs reverse
mode, shared vs per-point tangents, float32 vs float64).
"""
import math
import os
import re
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

import batchdiff as bd

# -- oracles -----------------------------------------------------------------------------------


def plain(f, *points):
    """``f`` evaluated with plain NumPy at one point."""
    return np.asarray(f(*points), dtype=float)


def fd_jacobian(f, x, h=1e-6):
    """Central-difference Jacobian of a one-argument ``f`` at ``x``: shape out + in."""
    x = np.asarray(x, dtype=float)
    y0 = plain(f, x)
    J = np.empty(y0.shape + x.shape)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        J[(Ellipsis,) + idx] = (plain(f, x + e) - plain(f, x - e)) / (2 * h)
    return J


def fd_hessian(f, x, h=1e-4):
    """Second central differences of ``f``'s values: shape out + in + in."""
    x = np.asarray(x, dtype=float)
    y0 = plain(f, x)
    H = np.empty(y0.shape + x.shape + x.shape)
    for i in np.ndindex(*x.shape):
        for j in np.ndindex(*x.shape):
            ei, ej = np.zeros_like(x), np.zeros_like(x)
            ei[i] = h
            ej[j] = h
            H[(Ellipsis,) + i + j] = (plain(f, x + ei + ej) - plain(f, x + ei - ej)
                                      - plain(f, x - ei + ej)
                                      + plain(f, x - ei - ej)) / (4 * h * h)
    return H


def per_point(oracle, f, X):
    return np.stack([oracle(f, x) for x in X])


def fd_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def fd2_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def exact(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def flat_args(f, shapes):
    """``f`` of several arguments as a function of one flat vector (for FD oracles)."""
    sizes = [math.prod(s) for s in shapes]
    cuts = np.cumsum(sizes)[:-1]

    def g(z):
        return f(*(p.reshape(s) for p, s in zip(np.split(z, cuts), shapes)))
    return g


@pytest.fixture
def rng():
    return np.random.default_rng(7)


B = 4

# The default back end (backend=None) and the reference interpreter, for the tables below.
BACKEND_PARAMS = pytest.mark.parametrize("backend", [None, "numpy"], ids=["default", "numpy"])

# -- output shapes (and values) of every transform ---------------------------------------------


def f_vec(x):                       # (3,) -> ()
    return np.sum(np.sin(x) * x ** 2) + x[0] * x[1] * x[2]


def F_vec(x):                       # (3,) -> (2,)
    return np.stack([x[0] * np.exp(x[1]), x[1] * x[2] ** 2])


W23 = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])


def f_mat(m):                       # (2, 3) -> ()
    return np.sum(W23 * m ** 3) + m[0, 1] * m[1, 2]


def F_mat(m):                       # (2, 3) -> (2, 2)
    return (m * m) @ m.T


SHAPE_CASES = [
    pytest.param(f_vec, (3,), (), id="scalar-of-vector"),
    pytest.param(F_vec, (3,), (2,), id="vector-of-vector"),
    pytest.param(f_mat, (2, 3), (), id="scalar-of-matrix"),
    pytest.param(F_mat, (2, 3), (2, 2), id="matrix-of-matrix"),
]
SCALAR_CASES = [p for p in SHAPE_CASES if p.values[2] == ()]


@BACKEND_PARAMS
@pytest.mark.parametrize("f, in_shape, out_shape", SHAPE_CASES)
def test_jacobian_shape_and_values(f, in_shape, out_shape, backend, rng):
    X = rng.uniform(0.5, 1.5, (B,) + in_shape)
    J = bd.jacobian(f, backend=backend)(X)
    assert J.shape == (B,) + out_shape + in_shape
    fd_close(J, per_point(fd_jacobian, f, X))


@BACKEND_PARAMS
@pytest.mark.parametrize("f, in_shape, out_shape", SHAPE_CASES)
def test_hessian_shape_and_values(f, in_shape, out_shape, backend, rng):
    X = rng.uniform(0.5, 1.5, (B,) + in_shape)
    H = bd.hessian(f, backend=backend)(X)
    assert H.shape == (B,) + out_shape + in_shape + in_shape
    fd2_close(H, per_point(fd_hessian, f, X))


@pytest.mark.parametrize("f, in_shape, out_shape", SHAPE_CASES)
def test_jvp_shape_and_values(f, in_shape, out_shape, rng):
    X = rng.uniform(0.5, 1.5, (B,) + in_shape)
    V = rng.normal(size=X.shape)
    y, t = bd.jvp(f)(X, V)
    assert y.shape == t.shape == (B,) + out_shape
    exact(y, np.stack([plain(f, x) for x in X]))
    J = per_point(fd_jacobian, f, X)
    n_in = len(in_shape)
    fd_close(t, np.stack([np.tensordot(J[b], V[b], n_in) for b in range(B)]))


@pytest.mark.parametrize("f, in_shape, out_shape", SHAPE_CASES)
def test_vjp_shape_and_values(f, in_shape, out_shape, rng):
    X = rng.uniform(0.5, 1.5, (B,) + in_shape)
    U = rng.normal(size=(B,) + out_shape)
    y, xbar = bd.vjp(f)(X, U)
    assert y.shape == (B,) + out_shape
    assert xbar.shape == (B,) + in_shape
    exact(y, np.stack([plain(f, x) for x in X]))
    J = per_point(fd_jacobian, f, X)
    n_out = len(out_shape)
    fd_close(xbar, np.stack([np.tensordot(U[b], J[b], n_out) for b in range(B)]))


@pytest.mark.parametrize("f, in_shape, out_shape", SCALAR_CASES)
def test_grad_value_and_grad_hvp_shapes_and_values(f, in_shape, out_shape, rng):
    X = rng.uniform(0.5, 1.5, (B,) + in_shape)
    g = bd.grad(f)(X)
    assert g.shape == (B,) + in_shape
    fd_close(g, per_point(fd_jacobian, f, X))
    value, g2 = bd.value_and_grad(f)(X)
    assert value.shape == (B,)
    assert g2.shape == (B,) + in_shape
    exact(value, [plain(f, x) for x in X])
    fd_close(g2, per_point(fd_jacobian, f, X))
    V = rng.normal(size=X.shape)
    hv = bd.hvp(f)(X, V)
    assert hv.shape == (B,) + in_shape
    H = per_point(fd_hessian, f, X)
    n = len(in_shape)
    fd2_close(hv, np.stack([np.tensordot(H[b], V[b], n) for b in range(B)]))


# -- argnums -----------------------------------------------------------------------------------

def f_two(x, y):                    # x (2,), y (3,) -> ()
    return np.sum(x ** 2) * np.sum(np.sin(y)) + x[0] * y[2] ** 3


def F_two(x, y):                    # x (2,), y (3,) -> (2,)
    return np.stack([x[0] * y[1] * y[2], np.exp(x[1]) * y[0] ** 2])


def two_points(rng, n=B):
    return rng.uniform(0.5, 1.5, (n, 2)), rng.uniform(0.5, 1.5, (n, 3))


def fd_by_arg(oracle, f, X, Y):
    """Per-argument blocks of an FD Jacobian/Hessian of f(x, y), per point."""
    g = flat_args(f, [(2,), (3,)])
    return np.stack([oracle(g, np.concatenate([x, y])) for x, y in zip(X, Y)])


def test_argnums_tuple_grad_and_value_and_grad(rng):
    X, Y = two_points(rng)
    gx, gy = bd.grad(f_two, argnums=(0, 1))(X, Y)
    assert gx.shape == (B, 2) and gy.shape == (B, 3)
    G = fd_by_arg(fd_jacobian, f_two, X, Y)
    fd_close(gx, G[:, :2])
    fd_close(gy, G[:, 2:])
    value, grads = bd.value_and_grad(f_two, argnums=(0, 1))(X, Y)
    assert isinstance(grads, tuple) and len(grads) == 2
    assert value.shape == (B,)
    exact(value, [f_two(x, y) for x, y in zip(X, Y)])
    fd_close(grads[1], G[:, 2:])


def test_argnums_one_element_tuple_gives_tuple(rng):
    X, Y = two_points(rng)
    res = bd.grad(f_two, argnums=(1,))(X, Y)
    assert isinstance(res, tuple) and len(res) == 1
    assert res[0].shape == (B, 3)


def test_argnums_tuple_jacobian(rng):
    X, Y = two_points(rng)
    Jx, Jy = bd.jacobian(F_two, argnums=(0, 1))(X, Y)
    assert Jx.shape == (B, 2, 2) and Jy.shape == (B, 2, 3)
    J = fd_by_arg(fd_jacobian, F_two, X, Y)
    fd_close(Jx, J[:, :, :2])
    fd_close(Jy, J[:, :, 2:])


@pytest.mark.parametrize("f, out_shape", [(f_two, ()), (F_two, (2,))], ids=["scalar", "vector"])
def test_argnums_tuple_hessian_is_nested(f, out_shape, rng):
    X, Y = two_points(rng)
    H = bd.hessian(f, argnums=(0, 1))(X, Y)
    assert len(H) == 2 and all(len(row) == 2 for row in H)
    sizes = {0: (2,), 1: (3,)}
    full = fd_by_arg(fd_hessian, f, X, Y)
    cut = {0: slice(0, 2), 1: slice(2, 5)}
    k = len(out_shape)
    for i in range(2):
        for j in range(2):
            assert H[i][j].shape == (B,) + out_shape + sizes[i] + sizes[j]
            block = full[(slice(None),) + (slice(None),) * k + (cut[i], cut[j])]
            fd2_close(H[i][j], block)


def test_argnums_tuple_jvp_vjp_hvp(rng):
    X, Y = two_points(rng)
    VX, VY = rng.normal(size=X.shape), rng.normal(size=Y.shape)
    J = fd_by_arg(fd_jacobian, F_two, X, Y)
    y, t = bd.jvp(F_two, argnums=(0, 1))(X, Y, VX, VY)
    assert y.shape == t.shape == (B, 2)
    fd_close(t, np.einsum("bij,bj->bi", J, np.concatenate([VX, VY], 1)))

    U = rng.normal(size=(B, 2))
    y, (xbar, ybar) = bd.vjp(F_two, argnums=(0, 1))(X, Y, U)
    ubar = np.einsum("bi,bij->bj", U, J)
    fd_close(xbar, ubar[:, :2])
    fd_close(ybar, ubar[:, 2:])

    hx, hy = bd.hvp(f_two, argnums=(0, 1))(X, Y, VX, VY)
    H = fd_by_arg(fd_hessian, f_two, X, Y)
    hv = np.einsum("bij,bj->bi", H, np.concatenate([VX, VY], 1))
    fd2_close(hx, hv[:, :2])
    fd2_close(hy, hv[:, 2:])


def test_negative_argnums(rng):
    X, Y = two_points(rng)
    G = fd_by_arg(fd_jacobian, f_two, X, Y)
    fd_close(bd.grad(f_two, argnums=-1)(X, Y), G[:, 2:])
    gy, gx = bd.grad(f_two, argnums=(-1, -2))(X, Y)
    fd_close(gy, G[:, 2:])
    fd_close(gx, G[:, :2])


@pytest.mark.parametrize("argnums", [2, -3, (0, 2)])
def test_argnums_out_of_range(argnums, rng):
    X, Y = two_points(rng)
    with pytest.raises(ValueError, match="argnums"):
        bd.grad(f_two, argnums=argnums)(X, Y)


def test_argnums_bad_values():
    with pytest.raises(ValueError, match="repeats"):
        bd.grad(f_two, argnums=(0, 0))
    with pytest.raises(TypeError, match="argnums"):
        bd.grad(f_two, argnums=())
    with pytest.raises(TypeError, match="argnums"):
        bd.grad(f_two, argnums=(0, 1.0))


def test_argnums_float_gets_a_clear_error():
    with pytest.raises(TypeError, match="argnums"):
        bd.grad(f_two, argnums=1.0)


def test_transform_needs_a_callable():
    with pytest.raises(TypeError, match="function"):
        bd.grad(3.0)


# -- in_axes -----------------------------------------------------------------------------------

def weighted(x, w):
    return np.sum(w * x ** 3)


def test_in_axes_none_shared_argument(rng):
    X = rng.normal(size=(B, 3))
    w = np.array([1.0, -2.0, 0.5])
    g = bd.grad(weighted, in_axes=(0, None))(X, w)
    exact(g, 3 * w * X ** 2)
    # the derivative with respect to the shared argument is still one per point
    gw = bd.grad(weighted, argnums=1, in_axes=(0, None))(X, w)
    assert gw.shape == (B, 3)
    exact(gw, X ** 3)


def test_in_axes_none_shared_python_scalar(rng):
    x = rng.normal(size=B)
    g = bd.grad(lambda x, c: c * x ** 2, in_axes=(0, None))(x, 2.5)
    exact(g, 5.0 * x)


def test_in_axes_1_batch_axis_not_first(rng):
    X = rng.normal(size=(B, 3))
    w = rng.normal(size=(B, 3))
    g = bd.grad(weighted, in_axes=1)(X.T.copy(), w.T.copy())
    assert g.shape == (B, 3)
    exact(g, 3 * w * X ** 2)


def test_in_axes_per_argument_tuple(rng):
    X = rng.normal(size=(B, 3))
    W = rng.normal(size=(B, 3))
    g = bd.grad(weighted, in_axes=(1, 0))(X.T.copy(), W)
    exact(g, 3 * W * X ** 2)
    g = bd.grad(weighted, in_axes=(0, -1))(X, W.T.copy())
    exact(g, 3 * W * X ** 2)


def test_in_axes_matrix_argument_middle_axis(rng):
    M = rng.normal(size=(B, 2, 3))
    g = bd.grad(lambda m: np.sum(m ** 2), in_axes=1)(np.moveaxis(M, 0, 1).copy())
    assert g.shape == (B, 2, 3)
    exact(g, 2 * M)


def test_mismatched_batch_sizes(rng):
    with pytest.raises(bd.ShapeError) as info:
        bd.grad(weighted)(rng.normal(size=(4, 3)), rng.normal(size=(5, 3)))
    assert "4" in str(info.value) and "5" in str(info.value)
    assert "in_axes=None" in str(info.value)


def test_no_batched_argument(rng):
    with pytest.raises(bd.ShapeError, match="batch axis"):
        bd.grad(weighted, in_axes=None)(np.ones(3), np.ones(3))


def test_in_axes_wrong_length():
    with pytest.raises(ValueError, match="in_axes"):
        bd.grad(weighted, in_axes=(0, None, None))(np.ones((2, 3)), np.ones(3))


def test_in_axes_on_scalar_argument():
    with pytest.raises(bd.ShapeError, match="in_axes=None"):
        bd.grad(weighted)(np.ones((2, 3)), 1.0)


# -- tangents and cotangents: per point or shared ----------------------------------------------

def test_shared_and_per_point_tangents_agree(rng):
    X = rng.uniform(0.5, 1.5, (B, 3))
    v = rng.normal(size=3)
    y1, t1 = bd.jvp(F_vec)(X, v)
    y2, t2 = bd.jvp(F_vec)(X, np.tile(v, (B, 1)))
    exact(t1, t2)
    J = per_point(fd_jacobian, F_vec, X)
    fd_close(t1, J @ v)
    exact(bd.hvp(f_vec)(X, v), bd.hvp(f_vec)(X, np.tile(v, (B, 1))))


def test_shared_and_per_point_cotangents_agree(rng):
    X = rng.uniform(0.5, 1.5, (B, 3))
    u = rng.normal(size=2)
    _, a = bd.vjp(F_vec)(X, u)
    _, b = bd.vjp(F_vec)(X, np.tile(u, (B, 1)))
    exact(a, b)
    J = per_point(fd_jacobian, F_vec, X)
    fd_close(a, np.einsum("i,bij->bj", u, J))


@pytest.mark.parametrize("kind, bad", [
    ("jvp", np.ones(2)), ("jvp", np.ones((B + 1, 3))), ("jvp", np.ones((B, 3, 1))),
    ("vjp", np.ones(3)), ("vjp", np.ones((B, 3))), ("hvp", np.ones((2, 3)))])
def test_wrong_tangent_shape(kind, bad):
    X = np.ones((B, 3))
    f = f_vec if kind == "hvp" else F_vec
    with pytest.raises(bd.ShapeError) as info:
        getattr(bd, kind)(f)(X, bad)
    shape = (2,) if kind == "vjp" else (3,)
    message = str(info.value)
    assert str((B,) + shape) in message and str(shape) in message
    assert str(bad.shape) in message


def test_missing_tangent():
    with pytest.raises(TypeError, match="tangent"):
        bd.jvp(F_vec)(np.ones((B, 3)))
    with pytest.raises(TypeError, match="cotangent"):
        bd.vjp(F_vec)(np.ones((B, 3)))


# -- dtypes ------------------------------------------------------------------------------------

def all_arrays(result):
    if isinstance(result, tuple):
        return [a for r in result for a in all_arrays(r)]
    return [result]


def call(kind, X, f_s=f_vec, f_v=F_vec, backend=None):
    f = f_s if kind in ("grad", "value_and_grad", "hvp") else f_v
    transform = getattr(bd, kind)(f, backend=backend)
    if kind in ("jvp", "hvp"):
        return transform(X, np.ones(X.shape[1:], dtype=X.dtype))
    if kind == "vjp":
        return transform(X, np.ones(2, dtype=X.dtype))
    return transform(X)


KINDS = ["grad", "value_and_grad", "jacobian", "hessian", "jvp", "vjp", "hvp"]


@BACKEND_PARAMS
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtype_follows_input(kind, dtype, backend, rng):
    X = rng.uniform(0.5, 1.5, (B, 3))
    res = call(kind, X.astype(dtype), backend=backend)
    for a in all_arrays(res):
        assert isinstance(a, np.ndarray) and a.dtype == dtype
    if dtype == np.float32:
        for a, b in zip(all_arrays(res), all_arrays(call(kind, X.astype(np.float32)
                                                         .astype(np.float64)))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_int_input_promotes_to_float64(kind):
    X = np.arange(1, 1 + 3 * B).reshape(B, 3)
    res = call(kind, X)
    for a in all_arrays(res):
        assert a.dtype == np.float64
    if kind == "grad":
        fd_close(res, per_point(fd_jacobian, f_vec, X.astype(float)))


def test_mixed_float32_float64_gives_float64(rng):
    X = rng.normal(size=(B, 3)).astype(np.float32)
    w = rng.normal(size=3)
    g = bd.grad(weighted, in_axes=(0, None))(X, w)
    assert g.dtype == np.float64
    g = bd.grad(weighted)(X, np.tile(w, (B, 1)))
    assert g.dtype == np.float64
    exact(g, 3 * w * X.astype(np.float64) ** 2)


def test_float32_value_and_grad_both_float32(rng):
    X = rng.normal(size=(B, 3)).astype(np.float32)
    v, g = bd.value_and_grad(lambda x: np.sum(x ** 2))(X)
    assert v.dtype == g.dtype == np.float32


def test_bool_input_is_accepted():
    X = np.array([[True, False, True], [False, False, True]])
    g = bd.grad(lambda x: np.sum(3.0 * x ** 2))(X)
    assert g.dtype == np.float64
    exact(g, 6.0 * X)


def test_complex_input_is_rejected():
    with pytest.raises(TypeError, match="complex"):
        bd.grad(f_vec)(np.ones((B, 3), dtype=complex))


@pytest.mark.parametrize("bad", [np.array([["a", "b", "c"]]),
                                 np.array([[object(), None, 1.0]], dtype=object),
                                 [["a", "b", "c"]]],
                         ids=["str", "object", "list-of-str"])
def test_non_numeric_input_is_rejected(bad):
    with pytest.raises(TypeError) as info:
        bd.grad(f_vec)(bad)
    message = str(info.value)
    assert "argument 0" in message and "number" in message


def test_complex_tangent_is_rejected():
    with pytest.raises(TypeError, match="complex"):
        bd.jvp(F_vec)(np.ones((B, 3)), np.ones(3, dtype=complex))


# -- empty batches -----------------------------------------------------------------------------

def test_empty_batch_every_transform():
    X = np.zeros((0, 3))
    assert bd.grad(f_vec)(X).shape == (0, 3)
    v, g = bd.value_and_grad(f_vec)(X)
    assert v.shape == (0,) and g.shape == (0, 3)
    assert bd.jacobian(F_vec)(X).shape == (0, 2, 3)
    assert bd.hessian(F_vec)(X).shape == (0, 2, 3, 3)
    assert bd.hessian(f_vec)(X).shape == (0, 3, 3)
    y, t = bd.jvp(F_vec)(X, np.zeros(3))
    assert y.shape == t.shape == (0, 2)
    y, t = bd.jvp(F_vec)(X, np.zeros((0, 3)))
    assert y.shape == t.shape == (0, 2)
    y, xbar = bd.vjp(F_vec)(X, np.zeros(2))
    assert y.shape == (0, 2) and xbar.shape == (0, 3)
    assert bd.hvp(f_vec)(X, np.zeros(3)).shape == (0, 3)
    M = np.zeros((0, 2, 3))
    assert bd.hessian(F_mat)(M).shape == (0, 2, 2, 2, 3, 2, 3)
    assert bd.grad(f_mat)(M, ).shape == (0, 2, 3)


def test_empty_batch_float32_keeps_dtype():
    g = bd.grad(f_vec)(np.zeros((0, 3), dtype=np.float32))
    assert g.shape == (0, 3) and g.dtype == np.float32


# -- NaN and inf propagate quietly -------------------------------------------------------------

@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_sqrt_of_negative_gives_nan(no_warnings):
    v, g = bd.value_and_grad(lambda x: np.sqrt(x[0]))(np.array([[-1.0], [4.0]]))
    assert np.isnan(v[0]) and np.isnan(g[0, 0])
    exact(v[1], 2.0)
    exact(g[1, 0], 0.25)
    assert np.isnan(bd.hessian(lambda x: np.sqrt(x[0]))(np.array([[-1.0]]))).all()


def test_log_at_zero(no_warnings):
    v, g = bd.value_and_grad(lambda x: np.log(x[0]))(np.array([[0.0], [1.0]]))
    assert v[0] == -np.inf and g[0, 0] == np.inf
    exact(v[1], 0.0)
    exact(g[1, 0], 1.0)


def test_division_by_zero_and_overflow(no_warnings):
    v, g = bd.value_and_grad(lambda x: 1.0 / x[0] + np.exp(x[1]))(
        np.array([[0.0, 1000.0], [2.0, 0.0]]))
    assert v[0] == np.inf
    assert g[0, 0] == -np.inf and g[0, 1] == np.inf
    exact(v[1], 1.5)
    exact(g[1], [-0.25, 1.0])


def test_nan_and_inf_inputs_propagate(no_warnings):
    X = np.array([[np.nan, 1.0], [np.inf, 1.0], [1.0, 2.0]])
    J = bd.jacobian(lambda x: np.stack([np.sin(x[0]) * x[1], x[1] ** 2]))(X)
    assert np.isnan(J[0, 0, 0]) and np.isnan(J[1, 0, 0])
    exact(J[:, 1, 1], [2.0, 2.0, 4.0])
    exact(J[2, 0], [math.cos(1.0) * 2.0, math.sin(1.0)])


def test_power_with_traced_exponent_at_zero_base(no_warnings):
    # d/dp 0**p = 0 for p > 0 (0**p is identically 0 there); d/dx x**p at x = 0 is 0 for p > 1
    v, g = bd.value_and_grad(lambda z: z[0] ** z[1])(np.array([[0.0, 2.0], [0.0, 3.5]]))
    exact(v, [0.0, 0.0])
    exact(g, [[0.0, 0.0], [0.0, 0.0]])


def test_nan_inputs_float32(no_warnings):
    g = bd.grad(lambda x: np.sum(np.log(x)))(np.array([[np.nan, 0.0, -1.0]], dtype=np.float32))
    assert g.dtype == np.float32
    assert np.isnan(g[0, 0]) and g[0, 1] == np.inf and g[0, 2] == -1.0


# -- misuse errors -----------------------------------------------------------------------------

X3 = np.ones((2, 3))


def test_python_if_on_traced_value():
    def f(x):
        if x[0] > 0:
            return x[0] ** 2
        return x[1]
    with pytest.raises(bd.TracerConversionError, match=r"np\.where"):
        bd.grad(f)(X3)


def test_python_and_on_traced_value():
    with pytest.raises(bd.TracerConversionError, match=r"np\.where"):
        bd.grad(lambda x: (x[0] > 0 and x[1] > 0) * x[2])(X3)


def test_float_of_traced_value():
    with pytest.raises(bd.TracerConversionError) as info:
        bd.grad(lambda x: float(x[0]) * 2.0)(X3)
    assert "float()" in str(info.value)
    assert "np.stack" in str(info.value)


def test_tracer_conversion_error_is_a_type_error():
    with pytest.raises(TypeError):
        bd.grad(lambda x: int(x[0]))(X3)


def test_assigning_traced_element_into_numpy_zeros():
    def f(x):
        out = np.zeros(2)
        out[0] = x[0] * x[1]
        out[1] = x[2]
        return np.sum(out)
    # NumPy re-raises the failed float() as "setting an array element with a sequence";
    # batchdiff's explanation is the cause, printed first in the traceback
    with pytest.raises((bd.TracerConversionError, ValueError)) as info:
        bd.grad(f)(X3)
    err = info.value if isinstance(info.value, bd.TracerConversionError) else info.value.__cause__
    assert isinstance(err, bd.TracerConversionError)
    assert "np.stack" in str(err) and "bd.numpy.array" in str(err)


def test_assigning_traced_slice_into_numpy_zeros():
    def f(x):
        out = np.zeros(3)
        out[:] = x
        return np.sum(out)
    with pytest.raises(bd.TracerConversionError) as info:
        bd.grad(f)(X3)
    assert "np.stack" in str(info.value) and "bd.numpy.array" in str(info.value)


def test_np_array_of_traced_values():
    with pytest.raises(bd.TracerConversionError, match=r"bd\.numpy\.array"):
        bd.jacobian(lambda x: np.array([x[0], x[1]]))(X3)


def test_indexing_with_traced_index():
    with pytest.raises(bd.TracerConversionError, match="index"):
        bd.grad(lambda x: x[x[0]])(X3)


def test_assignment_at_traced_index():
    def f(x):
        out = bd.numpy.zeros(3)
        out[x[0]] = x[1]
        return np.sum(out)
    with pytest.raises(bd.TracerConversionError, match="ind"):
        bd.grad(f)(X3)


def test_unsupported_numpy_function():
    with pytest.raises(bd.UnsupportedOperationError, match=r"np\.linalg\.qr"):
        bd.grad(lambda x: np.sum(np.linalg.qr(x[:2, :2])[0]))(np.ones((2, 3, 3)))


def test_unsupported_ufunc():
    with pytest.raises(bd.UnsupportedOperationError, match=r"np\.spacing"):
        bd.grad(lambda x: np.sum(np.spacing(x)))(X3)


def test_unsupported_ufunc_method():
    with pytest.raises(bd.UnsupportedOperationError, match="subtract"):
        bd.grad(lambda x: np.sum(np.subtract.accumulate(x)))(X3)


def test_spectral_norm_is_the_largest_singular_value_not_frobenius():
    """np.linalg.norm(M, 2) of a matrix is its largest singular value in NumPy: its
    gradient is u1 v1ᵀ, the first singular vectors' outer product."""
    M = np.array([[[3.0, 4.0], [0.0, 12.0]]])
    u, s, vt = np.linalg.svd(M[0])
    np.testing.assert_allclose(bd.grad(lambda m: np.linalg.norm(m, 2), backend="numpy")(M)[0],
                               np.outer(u[:, 0], vt[0]), rtol=1e-12)
    np.testing.assert_allclose(bd.grad(lambda m: np.linalg.norm(m, "fro"), backend="numpy")(M),
                               M / 13.0, rtol=1e-15)
    np.testing.assert_allclose(bd.grad(lambda v: np.linalg.norm(v, 2), backend="numpy")(M[0]),
                               [[0.6, 0.8], [0.0, 1.0]], rtol=1e-15)


def test_one_argument_where():
    with pytest.raises(bd.UnsupportedOperationError, match="np.where"):
        bd.grad(lambda x: np.sum(np.where(x > 0)[0]))(X3)


def test_grad_of_non_scalar():
    with pytest.raises(bd.ShapeError) as info:
        bd.grad(lambda x: x * 2)(X3)
    assert "vjp" in str(info.value) and "jacobian" in str(info.value)
    with pytest.raises(bd.ShapeError, match="vjp"):
        bd.value_and_grad(lambda x: x * 2)(X3)


def test_hvp_of_non_scalar():
    with pytest.raises(bd.ShapeError) as info:
        bd.hvp(lambda x: x * 2)(X3, np.ones(3))
    assert "hessian" in str(info.value)


@pytest.mark.parametrize("option", [{"backend": "torch"}, {"method": "jit"}, {"mode": "sideways"},
                                    {"backend": "numpy", "method": "compiled"}])
def test_unknown_option(option):
    with pytest.raises(ValueError) as info:
        bd.jacobian(F_vec, **option)
    value = next(iter(option.values())) if len(option) == 1 else "compiled"
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cupy"])
def test_named_backend_runs_or_says_it_is_unavailable(backend, rng):
    """A named back end gives the right answer, or BackendUnavailableError naming it.

    (When this was written only "numpy" existed; "numba" and "cupy" are being added.)
    """
    X = rng.uniform(0.5, 1.5, (B, 3))
    try:
        g = bd.grad(f_vec, backend=backend)(X)
    except bd.BackendUnavailableError as e:
        assert backend != "numpy"
        assert repr(backend) in str(e)
    else:
        assert type(g) is np.ndarray and g.shape == (B, 3)
        fd_close(g, per_point(fd_jacobian, f_vec, X))


def test_leaked_tracer_used_in_later_call():
    leaked = []

    def f(x):
        leaked.append(x[0] * 2)
        return x[0] * x[1]

    bd.grad(f)(X3)
    with pytest.raises(bd.LeakedTracerError):
        bd.grad(lambda x: x[0] * leaked[0])(X3)
    with pytest.raises(bd.LeakedTracerError):
        bd.grad(lambda x: leaked[0] * 3.0)(X3)
    with pytest.raises(bd.LeakedTracerError):
        bd.jacobian(lambda x: np.stack([x[0], np.sin(leaked[0])]))(X3)


def test_leaked_tracer_passed_to_a_transform():
    leaked = []
    bd.grad(lambda x: leaked.append(x) or np.sum(x))(X3)
    with pytest.raises(bd.LeakedTracerError):
        bd.grad(f_vec)(leaked[0])


def test_leaked_tracer_raises_at_first_use_outside_any_trace():
    """A value kept from a finished trace raises LeakedTracerError at its first use, not
    a TracedArray that looks like a result."""
    leaked = []

    def f(x):
        leaked.append(x[0] * 2)
        leaked.append(x)
        return x[0] * x[1]

    bd.grad(f, backend="numpy")(X3)
    scalar, vector = leaked
    uses = [lambda: scalar * 2, lambda: 2 - scalar, lambda: np.sin(scalar), lambda: -scalar,
            lambda: vector[0], lambda: np.sum(vector), lambda: vector.reshape(3, 1),
            lambda: vector.T, lambda: list(vector), lambda: np.stack([vector, vector]),
            lambda: float(scalar), lambda: bool(scalar), lambda: scalar.item(),
            lambda: bd.numpy.array([scalar]), lambda: bd.stop_gradient(scalar),
            lambda: np.clip(vector, 0, 1), lambda: vector @ vector]
    for k, use in enumerate(uses):
        with pytest.raises(bd.LeakedTracerError) as info:
            use()
        assert "s.append(v)" in str(info.value) and "Return it" in str(info.value), k
    assert "TracedArray" in repr(scalar)        # printing it is harmless


def test_leaked_tracer_inside_a_later_trace_raises_at_first_use():
    leaked = []
    bd.grad(lambda x: leaked.append(x) or np.sum(x), backend="numpy")(X3)
    with pytest.raises(bd.LeakedTracerError, match="escaped"):
        bd.grad(lambda x: np.sum(x) + np.sum(leaked[0] * 0.0), backend="numpy")(X3)
    with pytest.raises(bd.LeakedTracerError, match="escaped"):
        bd.grad(lambda x: x[0] + leaked[0][1], backend="numpy")(X3)


@pytest.mark.parametrize("use, what, fix", [
    (lambda v: v.item(), r"v\.item\(\)", "stop_gradient"),
    (lambda v: round(v), r"round\(\)", r"np\.round\(v\)"),
    (lambda v: int(v), r"int\(\)", "shape"),
    (lambda v: complex(v), r"complex\(\)", "real"),
    (lambda v: math.floor(v), r"math\.floor\(\)", "outside f"),
    (lambda v: math.trunc(v), r"math\.trunc\(\)", "outside f"),
    (lambda v: v.tolist(), r"v\.tolist\(\)", r"list\(v\)"),
    (lambda v: [1.0, 2.0][v], "index", r"np\.where"),
    (lambda v: range(v), "index or count", "Python ints"),
    (lambda v: f"{v:.3f}", "formatting", "value_and_grad"),
])
def test_conversions_of_a_traced_value_say_why_and_what_to_do(use, what, fix):
    with pytest.raises(bd.TracerConversionError) as info:
        bd.grad(lambda x: use(x[0]) * x[1], backend="numpy")(X3)
    message = str(info.value)
    assert re.search(what, message) and re.search(fix, message), message
    assert "no number while batchdiff traces" in message
    assert isinstance(info.value, TypeError)


def test_traced_value_prints():
    shown = []
    bd.grad(lambda x: shown.append(f"{x[0]}") or x[0], backend="numpy")(X3)
    assert shown == ["TracedArray(shape=(), dtype=float64)"]


@pytest.mark.parametrize("kind", ["grad", "value_and_grad", "jacobian", "hessian"])
def test_no_arguments_says_to_pass_a_batch(kind):
    with pytest.raises(TypeError) as info:
        getattr(bd, kind)(lambda: 1.0, backend="numpy")()
    assert "no arguments" in str(info.value) and "g(X)" in str(info.value)


def test_jvp_without_a_tangent_says_so():
    with pytest.raises(TypeError, match="tangent"):
        bd.jvp(lambda x: x, backend="numpy")(X3)


# -- keyword arguments of f: constants of the derivative, shared by all points ----------------

def scaled(x, scale=1.0, power=2):
    return scale * np.sum(x ** power)


@pytest.mark.parametrize("options", [dict(backend="numpy"),
                                     dict(backend="numba", method="replay")],
                         ids=["numpy", "replay"])
def test_keyword_arguments_pass_through_as_constants(options, rng):
    X = rng.uniform(0.5, 1.5, (B, 3))
    g = bd.grad(scaled, **options)
    np.testing.assert_allclose(g(X, scale=3.0), 6.0 * X, rtol=1e-14)
    np.testing.assert_allclose(g(X), 2.0 * X, rtol=1e-14)
    np.testing.assert_allclose(g(X, scale=-0.5, power=3), -1.5 * X ** 2, rtol=1e-14)
    np.testing.assert_allclose(g(X, scale=3.0), 6.0 * X, rtol=1e-14)  # traced once, reused
    np.testing.assert_allclose(g(X, power=3, scale=-0.5), -1.5 * X ** 2, rtol=1e-14)
    value, grad = bd.value_and_grad(scaled, **options)(X, power=1, scale=2.0)
    np.testing.assert_allclose(value, 2.0 * X.sum(axis=1), rtol=1e-14)
    np.testing.assert_allclose(grad, np.full_like(X, 2.0))
    h = bd.hessian(scaled, **options)(X, power=3)
    np.testing.assert_allclose(h, np.stack([np.diag(6.0 * x) for x in X]), rtol=1e-14)


def test_keyword_values_key_the_traced_program():
    """A new keyword value traces again; arrays compare by content, not identity."""
    calls = []

    def f(x, w=None, flag=False):
        calls.append(1)
        return np.sum(x * w) if flag else np.sum(x * x * w)

    g = bd.grad(f, backend="numpy")
    X = np.ones((2, 2))
    w = np.array([1.0, 2.0])
    np.testing.assert_array_equal(g(X, w=w), [[2.0, 4.0]] * 2)
    np.testing.assert_array_equal(g(X, w=w.copy()), [[2.0, 4.0]] * 2)
    assert len(calls) == 1
    w[1] = 5.0                                   # changed in place: traced again
    np.testing.assert_array_equal(g(X, w=w), [[2.0, 10.0]] * 2)
    np.testing.assert_array_equal(g(X, w=w, flag=True), [[1.0, 5.0]] * 2)  # Python `if`
    assert len(calls) == 3
    for k in range(40):                          # old values are dropped, not kept forever
        g(X, w=np.array([1.0, float(k)]))
    assert len(g._keyword_variants) <= 32


def test_keyword_that_is_a_traced_value_inside_another_transform():
    """d/dy of grad_x(s * x·x) at x = y, s = y[0]: d/dy (2 y0 y) by hand."""
    inner = bd.grad(lambda x, s=1.0: s * np.sum(x * x), backend="numpy")
    J = bd.jacobian(lambda y: inner(y, s=y[0]), backend="numpy")(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(J, [[[4.0, 0.0], [4.0, 2.0]]])
    # on a concrete batch Z, only the keyword traced: d/dy0 sum(2 y0 Z) = 2 sum(Z)
    Z = np.array([[1.0, 2.0]])
    g = bd.grad(lambda y: np.sum(inner(Z, s=y[0])), backend="numpy")(np.array([[3.0, 1.0]]))
    np.testing.assert_array_equal(g, [[6.0, 0.0]])


def test_keyword_with_out_buffer():
    g = bd.grad(scaled, backend="numpy")
    buf = np.empty((2, 3))
    assert g(X3, out=buf, scale=2.0) is buf
    np.testing.assert_array_equal(buf, 4.0 * X3)


def test_unknown_keyword_is_fs_own_error():
    with pytest.raises(TypeError, match="scael"):
        bd.grad(scaled, backend="numpy")(X3, scael=2.0)


def test_errors_share_a_base_class():
    for err in (bd.TracerConversionError, bd.UnsupportedOperationError, bd.LeakedTracerError,
                bd.ShapeError, bd.BackendUnavailableError):
        assert issubclass(err, bd.BatchDiffError)
    assert issubclass(bd.ShapeError, ValueError)


def test_returning_a_non_array():
    with pytest.raises(TypeError, match="return"):
        bd.jacobian(lambda x: {"a": x})(X3)


# -- AD modes agree ----------------------------------------------------------------------------

def F_modes(x):                     # (3,) -> (2,): mixes every kind of op
    return np.stack([np.sin(x[0] * x[1]) + np.exp(x[2]) / x[0],
                     np.tanh(x[0]) * x[1] ** 3 + np.log(x[2]) * np.sqrt(x[1])])


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_modes_jacobian(mode, rng):
    X = rng.uniform(0.5, 1.5, (B, 3))
    J = bd.jacobian(F_modes, mode=mode)(X)
    fd_close(J, per_point(fd_jacobian, F_modes, X))
    np.testing.assert_allclose(J, bd.jacobian(F_modes, mode="forward")(X), rtol=1e-13)


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_modes_hessian(mode, rng):
    X = rng.uniform(0.5, 1.5, (B, 3))
    H = bd.hessian(F_modes, mode=mode)(X)
    assert H.shape == (B, 2, 3, 3)
    fd2_close(H, per_point(fd_hessian, F_modes, X))
    np.testing.assert_allclose(H, np.swapaxes(H, -1, -2), rtol=0, atol=0)
    np.testing.assert_allclose(H, bd.hessian(F_modes, mode="forward")(X), rtol=1e-12)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_modes_hessian_argnums_tuple(mode, rng):
    X, Y = two_points(rng)
    H = bd.hessian(F_two, argnums=(0, 1), mode=mode)(X, Y)
    full = fd_by_arg(fd_hessian, F_two, X, Y)
    fd2_close(H[0][1], full[:, :, :2, 2:])
    fd2_close(H[1][0], full[:, :, 2:, :2])


# -- composition -------------------------------------------------------------------------------

def poly(x):                        # a³b² + b sin a
    a, b = x[0], x[1]
    return a ** 3 * b ** 2 + np.sin(a) * b


def poly_hessian(X):
    a, b = X[:, 0], X[:, 1]
    faa = 6 * a * b ** 2 - np.sin(a) * b
    fab = 6 * a ** 2 * b + np.cos(a)
    fbb = 2 * a ** 3
    return np.stack([np.stack([faa, fab], -1), np.stack([fab, fbb], -1)], 1)


def poly_third(X):
    a, b = X[:, 0], X[:, 1]
    by_count = {3: 6 * b ** 2 - np.cos(a) * b, 2: 12 * a * b - np.sin(a),
                1: 6 * a ** 2, 0: np.zeros_like(a)}
    T = np.empty((len(X), 2, 2, 2))
    for i in range(2):
        for j in range(2):
            for k in range(2):
                T[:, i, j, k] = by_count[[i, j, k].count(0)]
    return T


def test_jacobian_of_hessian_is_third_derivative(rng):
    X = rng.uniform(-1.5, 1.5, (B, 2))
    T = bd.jacobian(bd.hessian(poly))(X)
    assert T.shape == (B, 2, 2, 2)
    np.testing.assert_allclose(T, poly_third(X), rtol=1e-12, atol=1e-12)


def test_jacobian_of_grad_and_of_jacobian_is_hessian(rng):
    X = rng.uniform(-1.5, 1.5, (B, 2))
    np.testing.assert_allclose(bd.jacobian(bd.grad(poly))(X), poly_hessian(X), rtol=1e-12)
    np.testing.assert_allclose(bd.hessian(poly)(X), poly_hessian(X), rtol=1e-12)


def test_grad_of_directional_derivative_is_hvp(rng):
    X = rng.uniform(-1.5, 1.5, (B, 2))
    v = np.array([0.5, -2.0])
    expected = poly_hessian(X) @ v
    np.testing.assert_allclose(bd.grad(lambda x: bd.grad(poly)(x) @ v)(X), expected, rtol=1e-12)
    np.testing.assert_allclose(bd.hvp(poly)(X, v), expected, rtol=1e-12)
    np.testing.assert_allclose(bd.jvp(bd.grad(poly))(X, v)[1], expected, rtol=1e-12)


def test_closure_over_outer_traced_value(rng):
    # inner: d/dy sum(x y²) = 2 x y (x a constant of the inner derivative);
    # at y = x the outer function is sum(2 x²), whose gradient is 4x.
    X = rng.normal(size=(B, 3))
    g = bd.grad(lambda x: bd.grad(lambda y: np.sum(x * y ** 2))(x).sum())(X)
    np.testing.assert_allclose(g, 4 * X, rtol=1e-12)


def test_no_perturbation_confusion(rng):
    # d/dx [x · (d/dy (x + y))] = d/dx [x · 1] = 1 (Siskind & Pearlmutter); confusing the
    # two perturbations gives 2.
    X = rng.normal(size=(B, 3))
    g = bd.grad(lambda x: np.sum(x * bd.grad(lambda y: np.sum(x + y))(x)))(X)
    np.testing.assert_allclose(g, np.ones((B, 3)), rtol=1e-12)


def test_closure_over_outer_value_in_inner_hessian(rng):
    # inner Hessian of sum(x y³) in y is diag(6 x y); at y = x its sum is 6 Σx², gradient 12x.
    X = rng.normal(size=(B, 3))
    g = bd.grad(lambda x: np.sum(bd.hessian(lambda y: np.sum(x * y ** 3))(x)))(X)
    np.testing.assert_allclose(g, 12 * X, rtol=1e-12)


def test_three_levels_of_closures(rng):
    # innermost d/dz sum(x y z²) = 2xyz, at z = y: 2xy²; middle d/dy sum(2xy²) = 4xy,
    # at y = x: 4x²; outer gradient of sum(4x²) is 8x.
    X = rng.normal(size=(B, 3))
    g = bd.grad(lambda x: bd.grad(
        lambda y: bd.grad(lambda z: np.sum(x * y * z ** 2))(y).sum())(x).sum())(X)
    np.testing.assert_allclose(g, 8 * X, rtol=1e-12)


def test_traced_tangent_and_cotangent_inside_a_trace(rng):
    X = rng.normal(size=(B, 3))
    # jvp of y² at y = x along x is 2x²; gradient of its sum is 4x
    g = bd.grad(lambda x: np.sum(bd.jvp(lambda y: y ** 2)(x, x)[1]))(X)
    np.testing.assert_allclose(g, 4 * X, rtol=1e-12)
    # vjp of x·y² (x captured) at y = x with cotangent x is 2x³; gradient of its sum is 6x²
    g = bd.grad(lambda x: np.sum(bd.vjp(lambda y: x * y ** 2)(x, x)[1]))(X)
    np.testing.assert_allclose(g, 6 * X ** 2, rtol=1e-12)
    # hvp of sum(y⁴) at y = x along x is 12x³; gradient of its sum is 36x²
    g = bd.grad(lambda x: np.sum(bd.hvp(lambda y: np.sum(y ** 4))(x, x)))(X)
    np.testing.assert_allclose(g, 36 * X ** 2, rtol=1e-12)


def test_inner_transform_on_concrete_batch_closing_over_traced_value(rng):
    # Inside the outer trace, the inner gradient is taken at a concrete point y = 1
    # (a batch of one) and closes over the traced x: d/dy sum(x y²) at y = 1 is 2x, so the
    # outer function is 2·sum(x) and its gradient is 2 everywhere.
    X = rng.normal(size=(B, 3))
    g = bd.grad(lambda x: bd.grad(lambda y: np.sum(x * y ** 2))(np.ones((1, 3))).sum())(X)
    np.testing.assert_allclose(g, np.full((B, 3), 2.0), rtol=1e-12)


def test_inner_transform_with_argnums_and_constant_argument(rng):
    # d/dx of (∂/∂y [x0 y²] at y = 3) = d/dx (6 x0) = (6, 0)
    X = rng.normal(size=(B, 2))
    inner = bd.grad(lambda x, y: x[0] * y ** 2, argnums=1)
    g = bd.grad(lambda x: inner(x, 3.0))(X)
    np.testing.assert_allclose(g, np.tile([6.0, 0.0], (B, 1)), rtol=1e-12)


def test_vjp_inside_grad(rng):
    # u · J of F(x) = x² elementwise is 2 u x; its sum's gradient is 2u
    X = rng.normal(size=(B, 3))
    u = np.array([1.0, -1.0, 2.0])
    g = bd.grad(lambda x: np.sum(bd.vjp(lambda y: y ** 2)(x, u)[1]))(X)
    np.testing.assert_allclose(g, np.tile(2 * u, (B, 1)), rtol=1e-12)


# -- bd.numpy ----------------------------------------------------------------------------------

def test_bd_numpy_array_of_traced_values(rng):
    X = rng.normal(size=(B, 2))
    J = bd.jacobian(lambda x: bd.numpy.array([x[0] ** 2, x[0] * x[1], 3.0]))(X)
    x0, x1 = X[:, 0], X[:, 1]
    z = np.zeros(B)
    exact(J, np.stack([np.stack([2 * x0, z], -1), np.stack([x1, x0], -1),
                       np.stack([z, z], -1)], 1))


def test_bd_numpy_nested_array(rng):
    X = rng.normal(size=(B, 2))
    y, _ = bd.jvp(lambda x: bd.numpy.array([[x[0], x[1]], [x[1] * x[0], 1.0]]))(X, np.ones(2))
    assert y.shape == (B, 2, 2)
    exact(y[:, 1, 0], X[:, 0] * X[:, 1])
    exact(y[:, 1, 1], 1.0)


def test_bd_numpy_zeros_with_item_assignment(rng):
    def f(x):
        out = bd.numpy.zeros(3)
        out[0] = x[0] * x[1]
        out[2] = bd.numpy.sin(x[1])
        return out

    def g(x):
        out = bd.numpy.ones((2, 2))
        out[0, :] = x ** 2
        return out

    X = rng.normal(size=(B, 2))
    J = bd.jacobian(f)(X)
    exact(J[:, 0], np.stack([X[:, 1], X[:, 0]], -1))
    exact(J[:, 1], 0.0)
    exact(J[:, 2], np.stack([np.zeros(B), np.cos(X[:, 1])], -1))
    y, t = bd.jvp(g)(X, np.array([1.0, 0.0]))
    exact(y[:, 0], X ** 2)
    exact(y[:, 1], 1.0)
    exact(t[:, 0, 0], 2 * X[:, 0])
    exact(t[:, 0, 1], 0.0)
    exact(t[:, 1], 0.0)


def test_bd_numpy_outside_a_trace_is_plain_numpy():
    a = bd.numpy.array([1, 2, 3])
    assert type(a) is np.ndarray and a.dtype == np.array([1, 2, 3]).dtype
    z = bd.numpy.zeros(3)
    assert type(z) is np.ndarray and z.dtype == np.float64
    exact(z, [0.0, 0.0, 0.0])
    z[1] = 5.0
    o = bd.numpy.ones((2, 2), dtype=np.float32)
    assert type(o) is np.ndarray and o.dtype == np.float32 and (o == 1).all()
    assert type(bd.numpy.asarray([1.0])) is np.ndarray
    exact(bd.numpy.sin(np.array([0.0])), [0.0])


def test_bd_numpy_function_runs_on_plain_arrays_too(rng):
    def f(x):
        out = bd.numpy.zeros(2)
        out[0] = x[0] * x[1]
        out[1] = x[1] ** 3
        return out
    X = rng.normal(size=(B, 2))
    y, _ = bd.jvp(f)(X, np.ones(2))
    exact(y, np.stack([plain(f, x) for x in X]))
    fd_close(bd.jacobian(f)(X), per_point(fd_jacobian, f, X))


# -- a wide set of NumPy on traced values ------------------------------------------------------

_r = np.random.default_rng(11)
A33 = _r.normal(size=(3, 3))
A23 = _r.normal(size=(2, 3))
M34 = _r.normal(size=(3, 4))
C3 = _r.normal(size=3)
W6 = _r.uniform(0.5, 2.0, size=6)

NUMPY_CASES = {
    # reductions
    "sum-axis0-keepdims": (lambda x: np.sum(x, axis=0, keepdims=True), (2, 3)),
    "sum-axis1": (lambda x: x.sum(axis=1), (2, 3)),
    "sum-negative-axis": (lambda x: np.sum(x ** 2, axis=-1), (2, 3)),
    "sum-all": (lambda x: np.sum(x * x), (2, 3)),
    "prod-axis1-keepdims": (lambda x: np.prod(x, axis=1, keepdims=True), (2, 3)),
    "prod-all": (lambda x: np.prod(x), (4,)),
    "prod-method": (lambda x: x.prod(axis=0), (2, 3)),
    "mean-axis0": (lambda x: np.mean(x, axis=0), (2, 3)),
    "mean-keepdims": (lambda x: x.mean(axis=1, keepdims=True), (2, 3)),
    "mean-all": (lambda x: np.mean(x ** 3), (2, 3)),
    "max-all": (lambda x: np.max(x), (5,)),
    "min-axis0": (lambda x: np.min(x, axis=0), (3, 2)),
    "max-method-keepdims": (lambda x: x.max(axis=1, keepdims=True), (2, 3)),
    "amin": (lambda x: np.amin(x * C3), (3,)),
    "cumsum": (lambda x: np.cumsum(x ** 2), (4,)),
    "cumsum-axis1": (lambda x: np.cumsum(x, axis=1), (2, 3)),
    # products
    "dot-constant": (lambda x: np.dot(x, C3), (3,)),
    "dot-self": (lambda x: x.dot(x), (3,)),
    "matvec": (lambda x: A33 @ x, (3,)),
    "vecmat": (lambda x: x @ A33, (3,)),
    "matmat-constant-right": (lambda x: x @ M34, (2, 3)),
    "matmat-constant-left": (lambda x: A23 @ x, (3, 2)),
    "matmat-traced": (lambda x: x @ x.T, (2, 3)),
    "np-matmul": (lambda x: np.matmul(A23, x), (3,)),
    "cross": (lambda x: np.cross(x[:3], x[3:]), (6,)),
    "cross-constant": (lambda x: np.cross(C3, x), (3,)),
    "einsum-matvec": (lambda x: np.einsum("ij,j->i", A23, x), (3,)),
    "einsum-quadratic": (lambda x: np.einsum("i,ij,j->", x, A33, x), (3,)),
    "outer": (lambda x: np.outer(x, C3), (2,)),
    "outer-traced": (lambda x: np.outer(x, x ** 2), (3,)),
    "trace": (lambda x: np.trace(x.reshape(3, 3) ** 2), (9,)),
    # building and moving
    "stack": (lambda x: np.stack([x[0] * x[1], np.sin(x[2])]), (3,)),
    "stack-axis1": (lambda x: np.stack([x, x ** 2], axis=1), (3,)),
    "concatenate": (lambda x: np.concatenate([x[:2] ** 2, x[1:]]), (3,)),
    "hstack": (lambda x: np.hstack([x, np.exp(x[:1])]), (3,)),
    "vstack": (lambda x: np.vstack([x, x * C3]), (3,)),
    "reshape": (lambda x: x.reshape(3, 2) * np.arange(6.0).reshape(3, 2), (6,)),
    "reshape-tuple-minus1": (lambda x: np.reshape(x, (-1,)) ** 2, (2, 3)),
    "T": (lambda x: x.T @ A23, (2, 3)),
    "transpose-axes": (lambda x: np.transpose(x.reshape(2, 3, 1), (2, 0, 1)) * 2, (6,)),
    "transpose-method": (lambda x: x.transpose() - x[0, 0], (2, 3)),
    # indexing
    "slice-step": (lambda x: x[::2] * x[1::2], (6,)),
    "slice-reversed": (lambda x: x[::-1] * C3, (3,)),
    "negative-index": (lambda x: x[-1] * x[-3], (4,)),
    "slice-negative-bounds": (lambda x: x[-4:-1:2] ** 2, (5,)),
    "slice-2d": (lambda x: x[:, ::-2] * x[-1:, 1:2], (2, 3)),
    "fancy-index": (lambda x: x[np.array([2, 0, 1, 2])] ** 2, (3,)),
    "fancy-index-list": (lambda x: x[[3, 3, 0]] * x[1], (4,)),
    "fancy-2d": (lambda x: x[np.array([0, 1, 1]), np.array([2, 0, 2])] ** 3, (2, 3)),
    "boolean-mask": (lambda x: x[np.array([True, False, True, True])] ** 2, (4,)),
    "row-of-matrix": (lambda x: np.sin(x[1]), (2, 3)),
    # piecewise
    "where": (lambda x: np.where(x > 1.0, x ** 2, np.sin(x)), (4,)),
    "where-scalar-branch": (lambda x: np.where(x[0] < x[1], x[0] * x[1], 0.5), (2,)),
    "maximum": (lambda x: np.maximum(x, 1.0) * x, (4,)),
    "minimum-traced": (lambda x: np.minimum(x[:2], x[2:]), (4,)),
    "clip": (lambda x: np.clip(x, 0.8, 1.2) * x, (5,)),
    "abs": (lambda x: np.abs(x - 1.0) * x, (4,)),
    "abs-builtin": (lambda x: abs(x - 1.0), (4,)),
    "logical-ops": (lambda x: np.where(((x[0] > 1.0) & (x[1] < 1.0)) | ~(x[2] > 1.0),
                                       x[0] * x[1], x[2] ** 2), (3,)),
    "logical-funcs": (lambda x: np.where(np.logical_or(x[0] > 1.0, np.logical_not(x[1] > 1.0)),
                                         np.sin(x[0]), x[1]), (2,)),
    # elementwise
    "hypot": (lambda x: np.hypot(x[0], x[1]), (2,)),
    "arctan2": (lambda x: np.arctan2(x[0] - 1.0, x[1] - 1.0), (2,)),
    "norm": (lambda x: np.linalg.norm(x), (3,)),
    "norm-fro": (lambda x: np.linalg.norm(x), (2, 3)),
    "norm-axis": (lambda x: np.linalg.norm(x, axis=1), (2, 3)),
    "pow-int": (lambda x: x ** 3, (3,)),
    "pow-negative-int": (lambda x: x ** -2, (3,)),
    "pow-float": (lambda x: x ** 2.5, (3,)),
    "pow-half": (lambda x: x ** 0.5, (3,)),
    "pow-traced": (lambda x: x[0] ** x[1], (2,)),
    "pow-int-negative-base": (lambda x: (x - 1.0) ** 3 + (x - 1.0) ** 4, (3,)),
    "pow-negative-int-negative-base": (lambda x: (x - 1.7) ** -3, (3,)),
    "pow-traced-base-constant": (lambda x: 2.0 ** x, (3,)),
    "pow-array-exponent": (lambda x: x ** np.array([1.0, 2.0, 3.0]), (3,)),
    "np-power": (lambda x: np.power(x, 3), (2,)),
    "square": (lambda x: np.square(x) * np.sin(x), (3,)),
    "log10": (lambda x: np.log10(x), (3,)),
    "log2-exp2": (lambda x: np.log2(x) + np.exp2(x), (3,)),
    "division": (lambda x: x[0] / x[1] - 1.0 / x[2], (3,)),
    "reciprocal": (lambda x: np.reciprocal(x), (2,)),
    "special": (lambda x: np.stack([np.log1p(x[0]), np.expm1(x[1]), np.arcsin(x[2] / 2),
                                    np.arccos(x[2] / 2), np.arctan(x[0]), np.tan(x[1]),
                                    np.sinh(x[0]), np.cosh(x[1]), np.tanh(x[2])]), (3,)),
    "closure-constant-arrays": (lambda x: np.sum(W6 * np.exp(-x)) + A33[0] @ x[:3], (6,)),
    "int-constants": (lambda x: 2 * x + np.arange(3) - x * np.int64(3), (3,)),
}


@BACKEND_PARAMS
@pytest.mark.parametrize("name", list(NUMPY_CASES))
def test_numpy_function_on_traced_values(name, backend):
    f, in_shape = NUMPY_CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    X = rng.uniform(0.5, 1.5, (3,) + in_shape)
    V = rng.normal(size=X.shape)
    expected_y = np.stack([plain(f, x) for x in X])
    J_fd = per_point(fd_jacobian, f, X)
    y, t = bd.jvp(f, backend=backend)(X, V)
    np.testing.assert_allclose(y, expected_y, rtol=1e-13, atol=1e-14)
    n_in = len(in_shape)
    fd_close(t, np.stack([np.tensordot(J_fd[b], V[b], n_in) for b in range(len(X))]))
    J = bd.jacobian(f, backend=backend)(X)
    assert J.shape == expected_y.shape + in_shape
    fd_close(J, J_fd)
    if expected_y.shape == (len(X),):
        value, g = bd.value_and_grad(f, backend=backend)(X)
        np.testing.assert_allclose(value, expected_y, rtol=1e-13, atol=1e-14)
        fd_close(g, J_fd)


def test_method_sum_and_len_and_iteration(rng):
    def f(x):
        total = 0.0
        for row in x:               # iterating over a traced matrix yields its rows
            total = total + row.sum() * len(row)
        return total
    X = rng.normal(size=(B, 2, 3))
    exact(bd.grad(f)(X), np.full((B, 2, 3), 3.0))


# -- tapes -------------------------------------------------------------------------------------

def tape_fn(x):
    return np.stack([np.sin(x[0]) * x[1] ** 3, np.exp(x[0] * x[1]) + x[2] / x[0]])


def test_tape_is_printable_program(rng):
    X = rng.normal(size=(B, 3))
    t = bd.hessian(tape_fn).tape(X)
    assert isinstance(t, bd.Tape)
    text = str(t)
    lines = text.splitlines()
    assert lines[0].startswith("tape: 3 inputs")
    assert f"{t.num_ops} ops" in lines[0]
    assert "%0 = input 0" in text and "%2 = input 2" in text
    for op in ("sin(", "cos(", "exp(", "mul("):
        assert op in text
    assert sum(line.strip().startswith("out[") for line in lines) == 2 * 3 * 3
    assert t.num_ops > 0


def test_tape_of_simple_gradient_by_hand():
    # d/dv (v0 · v1) = (v1, v0): nothing to compute, the outputs are the inputs
    t = bd.grad(lambda v: v[0] * v[1]).tape(np.ones((1, 2)))
    assert t.num_ops == 0
    assert str(t).splitlines()[-2:] == ["  out[0] = %1", "  out[1] = %0"]


def test_tapes_are_deterministic(rng):
    X = rng.normal(size=(B, 3))
    for transform in (bd.hessian, bd.jacobian, bd.grad):
        f = tape_fn if transform is not bd.grad else (lambda x: np.sum(tape_fn(x)))
        first = str(transform(f).tape(X))
        second = str(transform(f).tape(X))
        assert first == second
    # the tape depends on the point's shape only, not on the batch size or values
    g = bd.hessian(tape_fn)
    assert str(g.tape(X)) == str(g.tape(np.zeros((1, 3))))


def test_tapes_are_deterministic_across_processes():
    code = ("import numpy as np, batchdiff as bd\n"
            "f = lambda x: np.stack([np.sin(x[0]) * x[1] ** 3,\n"
            "                        np.exp(x[0] * x[1]) + x[2] / x[0]])\n"
            "print(bd.hessian(f).tape(np.ones((2, 3))))\n")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout)
    outs.add(str(bd.hessian(tape_fn).tape(np.ones((2, 3)))) + "\n")
    assert len(outs) == 1


def test_grad_honours_mode_and_fixed_mode_transforms_refuse_one():
    f = lambda v: np.sin(v[0]) * v[1] ** 2 + np.exp(v[2] * v[0])  # noqa: E731
    X = np.random.default_rng(5).normal(size=(4, 3))
    want = np.stack([np.cos(X[:, 0]) * X[:, 1] ** 2 + X[:, 2] * np.exp(X[:, 2] * X[:, 0]),
                     2 * np.sin(X[:, 0]) * X[:, 1], X[:, 0] * np.exp(X[:, 2] * X[:, 0])], axis=1)
    for mode in ("forward", "reverse", "auto"):
        np.testing.assert_allclose(bd.grad(f, mode=mode, backend="numpy")(X), want, rtol=1e-14)
    # forward mode carries a tangent per input: a different tape from the reverse sweep
    assert (bd.grad(f, mode="forward", backend="numpy").tape(X).instrs
            != bd.grad(f, mode="reverse", backend="numpy").tape(X).instrs)
    for transform, fixed in ((bd.jvp, "forward"), (bd.vjp, "reverse"), (bd.hvp, "forward over")):
        for mode in ("forward", "reverse"):
            with pytest.raises(ValueError, match=f"{fixed}.*mode={mode!r}.*leave it out"):
                transform(f, mode=mode)
        transform(f, mode="auto")
