"""The conventions at kinks (docs/writing-functions.md), on every CPU executor.

Where a function has no derivative, batchdiff's partials are a choice; each one below
is checked on the reference interpreter and on both Numba executors, first and second
derivatives. The oracles: the definition in the guide's table, written out here as
numbers; central differences of the plain NumPy function, which give the symmetric
conventions exactly (the mean of the two one-sided derivatives: abs, max, min, hypot);
the one-sided difference from inside the interval for clip; closed forms and central
differences away from the kinks.

One function holds every convention, so each executor compiles few kernels.
"""
import numpy as np
import pytest

import batchdiff as bd

EXECUTORS = [dict(backend="numpy"), dict(backend="numba", method="replay"),
             dict(backend="numba", method="compiled")]
IDS = ["numpy", "replay", "compiled"]


def kinks(v):
    """Every convention at once; v = (a, b, c)."""
    a, b, c = v[0], v[1], v[2]
    return np.stack([
        np.abs(a),                      # 0  abs'(0) = 0
        np.maximum(a, b),               # 1  a tie splits 1/2, 1/2
        np.minimum(a, b),               # 2
        np.maximum(a, 0.0),             # 3  relu'(0) = 1/2, whichever order
        np.maximum(0.0, a),             # 4
        np.maximum(a, -a),              # 5  = abs(a), derivatives included: 0 at 0
        np.maximum(a, a),               # 6  = a: 1/2 + 1/2
        np.clip(a, 0.0, 1.0),           # 7  clip at either bound: 1 (x itself)
        np.clip(b, a, c),               # 8  ... and 0 to the bound itself
        np.hypot(a, b),                 # 9  hypot at (0, 0): (0, 0)
        np.max(v),                      # 10 a chain of maximum: 3 tied: 1/4, 1/4, 1/2
        np.linalg.norm(v),              # 11 the norm at 0: (0, 0, 0), as hypot
    ])


N_OUT = 12
ORIGIN, ONES, SMOOTH = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.3, -0.7, 0.9]
POINTS = np.array([ORIGIN, ONES, SMOOTH])
R2, R3 = np.sqrt(2.0), np.sqrt(3.0)

# The guide's table, as Jacobian rows d out / d (a, b, c) at the two kink points.
TABLE = {
    0: {"origin": [0, 0, 0], "ones": [1, 0, 0]},
    1: {"origin": [0.5, 0.5, 0], "ones": [0.5, 0.5, 0]},
    2: {"origin": [0.5, 0.5, 0], "ones": [0.5, 0.5, 0]},
    3: {"origin": [0.5, 0, 0], "ones": [1, 0, 0]},
    4: {"origin": [0.5, 0, 0], "ones": [1, 0, 0]},
    5: {"origin": [0, 0, 0], "ones": [1, 0, 0]},
    6: {"origin": [1, 0, 0], "ones": [1, 0, 0]},
    7: {"origin": [1, 0, 0], "ones": [1, 0, 0]},
    8: {"origin": [0, 1, 0], "ones": [0, 1, 0]},
    9: {"origin": [0, 0, 0], "ones": [1 / R2, 1 / R2, 0]},
    10: {"origin": [0.25, 0.25, 0.5], "ones": [0.25, 0.25, 0.5]},
    11: {"origin": [0, 0, 0], "ones": [1 / R3, 1 / R3, 1 / R3]},
}
# Derivatives the central difference gives exactly at the kink points: the symmetric
# conventions (abs, max/min ties, relu, hypot). clip and the 3-way max are one-sided.
SYMMETRIC = [0, 1, 2, 3, 4, 5, 6, 9, 11]


def closed_form_jacobian(p):
    """The Jacobian of ``kinks`` away from every kink, from calculus."""
    a, b, c = p
    r = np.hypot(a, b)
    top = int(np.argmax(p))
    rows = [[np.sign(a), 0, 0], [a > b, b > a, 0], [a < b, b < a, 0], [a > 0, 0, 0],
            [a > 0, 0, 0], [np.sign(a), 0, 0], [1, 0, 0], [0 < a < 1, 0, 0],
            [b < a, a < b < c, b > c], [a / r, b / r, 0], [k == top for k in range(3)],
            np.divide(p, np.sqrt(np.dot(p, p)))]
    return np.array(rows, dtype=float)


def central(p, h=1e-6):
    """Central differences of the plain NumPy ``kinks`` at point ``p``: (N_OUT, 3)."""
    cols = []
    for k in range(3):
        up, dn = np.array(p, float), np.array(p, float)
        up[k] += h
        dn[k] -= h
        cols.append((kinks(up) - kinks(dn)) / (2 * h))
    return np.stack(cols, axis=1)


def one_sided(p, k, sign, h=2.0 ** -20):
    """The difference of ``kinks`` at ``p`` in argument ``k``, to the side ``sign``
    (a step of a power of 2, so that the difference is exact where ``kinks`` is linear)."""
    moved = np.array(p, float)
    moved[k] += sign * h
    return (kinks(moved) - kinks(np.array(p, float))) / (sign * h)


@pytest.fixture(scope="module", params=range(len(EXECUTORS)), ids=IDS)
def derivatives(request):
    """Per executor: the Jacobian and the Hessian of ``kinks`` at ``POINTS``."""
    options = EXECUTORS[request.param]
    return (bd.jacobian(kinks, **options)(POINTS), bd.hessian(kinks, **options)(POINTS))


def test_kink_conventions_match_the_table(derivatives):
    jac, _ = derivatives
    assert jac.shape == (3, N_OUT, 3)
    for row, where in TABLE.items():
        for k, name in ((0, "origin"), (1, "ones")):
            np.testing.assert_allclose(jac[k, row], where[name], rtol=1e-15, atol=0,
                                       err_msg=f"output {row} at {name}")


def test_symmetric_conventions_are_central_differences(derivatives):
    """abs, max/min ties and hypot take the mean of the one-sided derivatives."""
    jac, _ = derivatives
    for k, p in enumerate((ORIGIN, ONES)):
        np.testing.assert_allclose(jac[k, SYMMETRIC], central(p)[SYMMETRIC], atol=1e-9,
                                   err_msg=f"point {p}")


def test_clip_at_a_bound_is_the_derivative_from_inside(derivatives):
    jac, _ = derivatives
    assert jac[0, 7, 0] == one_sided(ORIGIN, 0, +1)[7] == 1.0    # at lo = 0, from above
    assert jac[1, 7, 0] == one_sided(ONES, 0, -1)[7] == 1.0      # at hi = 1, from below
    assert np.allclose(one_sided(ORIGIN, 0, -1)[7], 0.0)          # outside: flat


def test_away_from_kinks_every_derivative_is_calculus(derivatives):
    jac, hess = derivatives
    np.testing.assert_allclose(jac[2], closed_form_jacobian(SMOOTH), rtol=1e-14, atol=0)
    np.testing.assert_allclose(jac[2], central(SMOOTH), rtol=1e-8, atol=1e-9)
    a, b, _ = SMOOTH
    r = np.hypot(a, b)
    expected = np.zeros((N_OUT, 3, 3))
    expected[9, :2, :2] = [[b * b / r ** 3, -a * b / r ** 3], [-a * b / r ** 3, a * a / r ** 3]]
    p, n = np.array(SMOOTH), np.sqrt(np.dot(SMOOTH, SMOOTH))
    expected[11] = (np.eye(3) - np.outer(p, p) / n ** 2) / n
    np.testing.assert_allclose(hess[2], expected, rtol=1e-14, atol=1e-15)


def test_second_derivatives_at_kinks_are_zero_but_hypots_curvature(derivatives):
    """abs''(0), max'' and clip'' are 0; the Hessians of hypot and the norm are 0 at the
    origin (as abs''(0)) and (I - u uᵀ) / r elsewhere."""
    _, hess = derivatives
    assert np.isfinite(hess).all()
    expected = np.zeros((2, N_OUT, 3, 3))
    expected[1, 9, :2, :2] = [[0.5 / R2, -0.5 / R2], [-0.5 / R2, 0.5 / R2]]
    expected[1, 11] = (np.eye(3) - 1 / 3) / R3
    np.testing.assert_allclose(hess[:2], expected, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_both_ad_modes_share_the_conventions(mode):
    ref = bd.jacobian(kinks, backend="numpy", mode=mode)(POINTS)
    np.testing.assert_array_equal(ref, bd.jacobian(kinks, backend="numpy")(POINTS))
    got = bd.jacobian(kinks, backend="numba", method="replay", mode=mode)(POINTS)
    np.testing.assert_array_equal(got, ref)
    for hmode in ("forward", "reverse"):
        h = bd.hessian(kinks, backend="numba", method="replay", mode=hmode)(POINTS)
        np.testing.assert_array_equal(h, bd.hessian(kinks, backend="numpy", mode=hmode)(POINTS))


@pytest.mark.parametrize("f", [lambda v: np.hypot(v[0], v[1]), lambda v: np.linalg.norm(v)],
                         ids=["hypot", "norm"])
def test_nan_stays_out_of_hypot_and_norm_at_the_origin(f):
    """The partials a / hypot(a, b) were 0/0 there, and sqrt'(0) * 0 = inf * 0 in
    the norm; every transform, both modes, is finite (0) now."""
    x = np.zeros((2, 2))
    for transform in (bd.grad, bd.hessian):
        for mode in ("forward", "reverse"):
            assert (transform(f, backend="numpy", mode=mode)(x) == 0).all()
    _, t = bd.jvp(f, backend="numpy")(x, np.ones_like(x))
    _, u = bd.vjp(f, backend="numpy")(x, np.ones(2))
    assert (t == 0).all() and (u == 0).all()


@pytest.mark.parametrize("options", EXECUTORS, ids=IDS)
def test_float16_computes_and_returns_float32(options):
    """float16 points are widened to float32: the results are float32, the same numbers
    as for the float32 points (float16 arithmetic would lose 3 of its 4 digits to the
    chain rule)."""
    half = POINTS.astype(np.float16)
    got = bd.jacobian(kinks, **options)(half)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, bd.jacobian(kinks, **options)(half.astype(np.float32)))
    value, _ = bd.jvp(kinks, **options)(half, np.ones(3, np.float16))
    assert value.dtype == np.float32
    mixed = bd.jacobian(kinks, **options)(half.astype(np.float64))
    assert mixed.dtype == np.float64
