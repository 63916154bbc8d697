"""The seeds' examples: the PyTorch autograd notebooks our users learned from, in batchdiff.

Each example from ``seeds/`` is a PyTorch idiom, ``y.backward()`` / ``x.grad``,
``y.backward(gradient=u)``, ``torch.autograd.grad``, ``requires_grad=False``,
``tensor.detach()``, ``torch.autograd.functional.jacobian/hessian``, written with
batchdiff's transforms instead:

    y.backward(); x.grad                ->  bd.grad(f)(X)
    y.backward(gradient=u); x.grad      ->  bd.vjp(f)(X, u)[1]
    x.requires_grad_(False)             ->  leave x out of argnums (or in_axes=None)
    y.detach()                          ->  bd.stop_gradient(y) / bd.detach(y)
    jacobian(f, x), hessian(f, x)       ->  bd.jacobian(f)(X), bd.hessian(f)(X)

Every example runs on a batch of one point (the notebook's point, checked against the
notebook's numbers) and on a batch of many random points, each checked against the
closed form of the derivative. Expected values come from the math, never from batchdiff.
"""
import math

import numpy as np
import pytest

import batchdiff as bd

B = 50


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


# -- f = 3x³ - y², two scalar arguments --------------------------------------------------------

def f_xy(x, y):
    return 3 * x ** 3 - y ** 2


def df_xy(x, y):
    return 9 * x ** 2, -2 * y


def test_grad_two_scalar_args_at_seed_point():
    gx, gy = bd.grad(f_xy, argnums=(0, 1))(np.array([2.0]), np.array([3.0]))
    assert gx.shape == gy.shape == (1,)
    close(gx, [36.0])
    close(gy, [-6.0])


def test_grad_two_scalar_args_batch(rng):
    x, y = rng.uniform(-3, 3, B), rng.uniform(-3, 3, B)
    gx, gy = bd.grad(f_xy, argnums=(0, 1))(x, y)
    ex, ey = df_xy(x, y)
    assert gx.shape == gy.shape == (B,)
    close(gx, ex)
    close(gy, ey)


def test_grad_y_constant_like_requires_grad_false():
    gx = bd.grad(f_xy, argnums=0)(np.array([2.0]), np.array([3.0]))
    assert not isinstance(gx, tuple)
    close(gx, [36.0])


def test_grad_y_constant_batch(rng):
    x, y = rng.uniform(-3, 3, B), rng.uniform(-3, 3, B)
    gx = bd.grad(f_xy)(x, y)
    close(gx, 9 * x ** 2)


def test_grad_shared_argument_in_axes_none(rng):
    """y = 3 shared by every point (in_axes=None), like a tensor without requires_grad."""
    x = rng.uniform(-3, 3, B)
    gx, gy = bd.grad(f_xy, argnums=(0, 1), in_axes=(0, None))(x, 3.0)
    close(gx, 9 * x ** 2)
    close(gy, np.full(B, -6.0))
    gx1, gy1 = bd.grad(f_xy, argnums=(0, 1), in_axes=(0, None))(np.array([2.0]), 3.0)
    close(gx1, [36.0])
    close(gy1, [-6.0])


# -- F = 3x³ - y² elementwise, y.backward(gradient=ones) ---------------------------------------

def test_vjp_elementwise_seed_points():
    x, y = np.array([[2.0, 3.0]]), np.array([[6.0, 4.0]])
    F, (xbar, ybar) = bd.vjp(f_xy, argnums=(0, 1))(x, y, np.ones(2))
    close(F, 3 * x ** 3 - y ** 2)
    close(xbar, [[36.0, 81.0]])
    close(ybar, [[-12.0, -8.0]])

    a, b = np.array([[1.0, 2.0]]), np.array([[2.0, 3.0]])
    Q, (abar, bbar) = bd.vjp(f_xy, argnums=(0, 1))(a, b, np.ones(2))
    close(Q, [[3 - 4, 24 - 9]])
    close(abar, [[9.0, 36.0]])
    close(bbar, [[-4.0, -6.0]])


def test_vjp_elementwise_batch(rng):
    x, y = rng.uniform(-3, 3, (B, 2)), rng.uniform(-3, 3, (B, 2))
    F, (xbar, ybar) = bd.vjp(f_xy, argnums=(0, 1))(x, y, np.ones(2))
    assert F.shape == xbar.shape == ybar.shape == (B, 2)
    close(F, 3 * x ** 3 - y ** 2)
    close(xbar, 9 * x ** 2)
    close(ybar, -2 * y)


# -- y = x², y.backward(gradient=u) ------------------------------------------------------------

def square(x):
    return x ** 2


@pytest.mark.parametrize("u", [[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
def test_vjp_square(u, rng):
    u = np.array(u)
    y, xbar = bd.vjp(square)(np.array([[0.0, 1.0, 2.0]]), u)
    close(y, [[0.0, 1.0, 4.0]])
    close(xbar, [2 * np.array([0.0, 1.0, 2.0]) * u])

    x = rng.uniform(-3, 3, (B, 3))
    y, xbar = bd.vjp(square)(x, u)
    close(y, x ** 2)
    close(xbar, 2 * x * u)


def test_vjp_square_seed_numbers():
    x = np.array([[0.0, 1.0, 2.0]])
    close(bd.vjp(square)(x, np.ones(3))[1], [[0.0, 2.0, 4.0]])
    close(bd.vjp(square)(x, np.array([1.0, 2.0, 3.0]))[1], [[0.0, 4.0, 12.0]])


# -- x.grad of a sum ---------------------------------------------------------------------------

def test_grad_of_sum_is_ones(rng):
    g = bd.grad(np.sum)(np.zeros((1, 3, 4)))
    assert g.shape == (1, 3, 4)
    close(g, np.ones((1, 3, 4)))
    g = bd.grad(lambda x: x.sum())(rng.normal(size=(B, 3, 4)))
    close(g, np.ones((B, 3, 4)))


def test_grad_of_sum_of_squares(rng):
    f = lambda x: (x ** 2).sum()  # noqa: E731
    close(bd.grad(f)(np.arange(4.0)[None]), [[0.0, 2.0, 4.0, 6.0]])
    x = rng.normal(size=(B, 4))
    close(bd.grad(f)(x), 2 * x)


# -- y = [x₀², x₀x₁, x₁²] ----------------------------------------------------------------------

def y_list(x):
    return [x[0] ** 2, x[0] * x[1], x[1] ** 2]


def y_stack(x):
    return np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])


def jac_y(x):
    """Closed-form Jacobian of y for a batch x of shape (B, 2): (B, 3, 2)."""
    x0, x1 = x[:, 0], x[:, 1]
    z = np.zeros_like(x0)
    return np.stack([np.stack([2 * x0, z], -1),
                     np.stack([x1, x0], -1),
                     np.stack([z, 2 * x1], -1)], 1)


@pytest.mark.parametrize("fn", [y_list, y_stack], ids=["list", "stack"])
def test_vector_output_seed_point(fn):
    x = np.array([[2.0, 3.0]])
    y, xbar = bd.vjp(fn)(x, np.ones(3))
    close(y, [[4.0, 6.0, 9.0]])
    close(xbar, [[7.0, 8.0]])
    close(bd.vjp(fn)(x, np.array([1.0, 2.0, 3.0]))[1], [[10.0, 22.0]])
    J = bd.jacobian(fn)(x)
    assert J.shape == (1, 3, 2)
    close(J, [[[4.0, 0.0], [3.0, 2.0], [0.0, 6.0]]])


@pytest.mark.parametrize("fn", [y_list, y_stack], ids=["list", "stack"])
def test_vector_output_batch(fn, rng):
    x = rng.uniform(-3, 3, (B, 2))
    J = jac_y(x)
    close(bd.jacobian(fn)(x), J)
    u = rng.normal(size=(B, 3))
    close(bd.vjp(fn)(x, u)[1], np.einsum("bi,bij->bj", u, J))
    close(bd.vjp(fn)(x, np.array([1.0, 2.0, 3.0]))[1],
          np.einsum("i,bij->bj", [1.0, 2.0, 3.0], J))


# -- f = x·x·[0, 1, 2, 3]: Jacobian and Hessian ------------------------------------------------

C4 = np.arange(4.0)


def weighted_square(x):
    return x * x * C4


def test_weighted_square_seed_point():
    x = np.ones((1, 4))
    J = bd.jacobian(weighted_square)(x)
    close(J, [np.diag([0.0, 2.0, 4.0, 6.0])])
    H = bd.hessian(weighted_square)(x)
    assert H.shape == (1, 4, 4, 4)
    expected = np.zeros((4, 4, 4))
    for i in range(4):
        expected[i, i, i] = 2.0 * i
    close(H, [expected])


def test_weighted_square_batch(rng):
    x = rng.normal(size=(B, 4))
    J = bd.jacobian(weighted_square)(x)
    close(J, np.stack([np.diag(2 * C4 * xb) for xb in x]))
    H = bd.hessian(weighted_square)(x)
    expected = np.zeros((4, 4, 4))
    expected[np.arange(4), np.arange(4), np.arange(4)] = 2 * C4
    close(H, np.broadcast_to(expected, (B, 4, 4, 4)))


# -- detaching: z = stop_gradient(x·x)·x -------------------------------------------------------

@pytest.mark.parametrize("cut", [bd.stop_gradient, bd.detach], ids=["stop_gradient", "detach"])
def test_stop_gradient(cut, rng):
    f = lambda x: np.sum(cut(x * x) * x)  # noqa: E731
    x = np.arange(4.0)[None]
    close(bd.grad(f)(x), [[0.0, 1.0, 4.0, 9.0]])
    xs = rng.normal(size=(B, 4))
    close(bd.grad(f)(xs), xs ** 2)
    value, g = bd.value_and_grad(f)(xs)
    close(value, np.sum(xs ** 3, axis=1))


def test_without_stop_gradient(rng):
    f = lambda x: np.sum((x * x) * x)  # noqa: E731
    close(bd.grad(f)(np.arange(4.0)[None]), [[0.0, 3.0, 12.0, 27.0]])
    xs = rng.normal(size=(B, 4))
    close(bd.grad(f)(xs), 3 * xs ** 2)


# -- 3cos(x) - sin(y)² -------------------------------------------------------------------------

def trig(x, y):
    return 3 * np.cos(x) - np.sin(y) ** 2


def test_trig_seed_point():
    gx, gy = bd.grad(trig, argnums=(0, 1))(np.array([2.0]), np.array([3.0]))
    close(gx, [-3 * math.sin(2.0)])
    close(gy, [-2 * math.sin(3.0) * math.cos(3.0)])
    np.testing.assert_allclose([gx[0], gy[0]], [-2.7279, 0.2794], atol=5e-5)


def test_trig_batch(rng):
    x, y = rng.uniform(-4, 4, B), rng.uniform(-4, 4, B)
    gx, gy = bd.grad(trig, argnums=(0, 1))(x, y)
    close(gx, -3 * np.sin(x))
    close(gy, -2 * np.sin(y) * np.cos(y))


# -- y.backward() on a non-scalar y ------------------------------------------------------------

@pytest.mark.parametrize("n", [1, B])
def test_grad_of_non_scalar_needs_cotangent(n):
    with pytest.raises(bd.ShapeError) as info:
        bd.grad(square)(np.ones((n, 3)))
    message = str(info.value)
    assert "vjp" in message and "jacobian" in message
