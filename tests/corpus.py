"""The test corpus: small per-point functions covering every op, shape and option.

Each case is ``(name, f, shapes, argnums, in_axes)``; ``points(case, B, dtype, rng)``
makes arguments inside the functions' domains. Executors are tested against the
reference interpreter on all of it.
"""
import numpy as np

import batchdiff as bd
from batchdiff.problems import arm, lennard_jones, lorenz96, rosenbrock


def transcendental(v):
    return (np.exp(v[0]) * np.log1p(v[1] ** 2) + np.tanh(v[2]) / np.sqrt(1.0 + v[0] ** 2)
            + np.arctan2(v[1], 1.0 + v[2] ** 2) + np.expm1(v[2]) * np.sinh(v[0])
            - np.cosh(v[1]) + np.tan(0.5 * v[0]) + np.arcsin(0.5 * np.tanh(v[1]))
            + np.arccos(0.3 * np.sin(v[2])) + np.arctan(v[0] * v[1]) + np.log(2.0 + v[2] ** 2))


def piecewise(v):
    w = np.where(v[0] > v[1], v[0] * v[1], v[2] ** 3)
    return (np.abs(v[0] - 0.5) + np.maximum(v[1], v[2]) * np.minimum(v[0], v[2])
            + np.hypot(v[0], v[1]) + w + np.sign(v[2] - 0.5) * v[1]
            + (v[0] >= v[2]) * 2.0 + (v[1] <= v[0]) + (v[2] != v[0]) - (v[0] == v[1])
            + (v[0] < v[1]) * v[2] + np.power(1.5 + v[0], v[1]) + bd.stop_gradient(v[0]) * v[1])


def matrix_in(m):
    return np.trace(m @ m.T) + np.linalg.norm(m[:, 0]) * np.prod(m[1])


def network(x, w):
    hidden = np.tanh(w[:, :2] @ x + w[:, 2])
    return np.stack([np.sum(hidden ** 2), np.sum(np.sin(hidden))])


def two_args(x, y):
    return np.sum(x * np.exp(-y)) + x[0] * y[1] ** 2


def scalar_in(t):
    return np.stack([np.sin(t) * t, np.cos(t) ** 2, t / (1.0 + t * t)])


CASES = [
    ("rosenbrock", rosenbrock, [(6,)], 0, 0),
    ("lorenz96", lorenz96, [(8,)], 0, 0),
    ("arm", arm, [(2,)], 0, 0),
    ("transcendental", transcendental, [(3,)], 0, 0),
    ("piecewise", piecewise, [(3,)], 0, 0),
    ("matrix_in", matrix_in, [(3, 2)], 0, 0),
    ("network_shared_w", network, [(2,), (4, 3)], 0, (0, None)),
    ("two_args_both", two_args, [(3,), (3,)], (0, 1), 0),
    ("scalar_in", scalar_in, [()], 0, 0),
    ("lennard_jones", lennard_jones, [(9,)], 0, 0),
]
SCALAR = {"rosenbrock", "transcendental", "piecewise", "matrix_in", "two_args_both",
          "lennard_jones"}


def points(case, batch, dtype, rng):
    """Arguments for ``case``: per point (B, ...) or shared, inside the domain."""
    name, f, shapes, argnums, in_axes = case
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(shapes)
    args = []
    for shape, axis in zip(shapes, axes):
        full = shape if axis is None else (batch,) + shape
        x = rng.uniform(0.1, 0.9, size=full)
        if name == "lennard_jones":   # atoms about one unit apart
            x = (np.array([0, 0, 0, 1.1, 0, 0, 0.5, 0.9, 0]) + 0.1 * x)
        args.append(x.astype(dtype))
    return args


def calls(case, batch, dtype, rng):
    """``(kind, args, extra)`` for every transform that applies to ``case``.

    ``args`` are the function's arguments, ``extra`` the tangents (jvp, hvp) or the
    cotangent (vjp) that follow them in the call.
    """
    from batchdiff.tracer import trace
    name, f, shapes, argnums, in_axes = case
    args = points(case, batch, dtype, rng)
    _, out_shape, _ = trace(f, shapes)
    kinds = ["jacobian", "jvp", "vjp"] + (
        ["grad", "value_and_grad", "hessian", "hvp"] if name in SCALAR else ["hessian"])
    for kind in kinds:
        extra = []
        if kind in ("jvp", "hvp"):
            extra = tangents(case, args, rng)
        elif kind == "vjp":
            extra = [rng.uniform(-1, 1, size=(batch,) + out_shape).astype(dtype)]
        yield kind, args, extra


def tangents(case, args, rng):
    """One tangent per differentiated argument, shaped like it."""
    argnums = case[3] if isinstance(case[3], tuple) else (case[3],)
    return [rng.uniform(-1, 1, size=args[i].shape).astype(args[i].dtype) for i in argnums]


# -- blocks (batchdiff.blocks): products with constant matrices of 32 rows and more --------
_BLOCK_RNG = np.random.default_rng(2024)
BLOCK_W1 = _BLOCK_RNG.normal(size=(32, 8)) / np.sqrt(8)
BLOCK_B1 = _BLOCK_RNG.normal(size=32) * 0.1
BLOCK_W2 = _BLOCK_RNG.normal(size=(32, 32)) / 6
BLOCK_M = _BLOCK_RNG.normal(size=(4, 3)) / 2


def block_everything(x):
    """Every block op and kind of block segment in one function of 8 inputs (a compiled
    kernel costs seconds): ``linear`` with groups before (g) and after (h) the contracted
    axis, ``sum`` over all and over one axis, ``broadcast`` (in its derivatives), a block
    constant, fused elementwise chains with tanh, sin, a comparison and ``where``, and a
    broadcast of an input (a rewrite's). The default thresholds make its products blocks
    (``block_trace.LINEAR_MIN_ROWS``)."""
    h = np.tanh(BLOCK_W1 @ x + BLOCK_B1)
    G = h.reshape(8, 4) @ BLOCK_M                          # (8, 3): g = 8
    s = np.sum(np.sin(G), axis=1) + 0.5 * np.sum(G * G, axis=0)[1]
    r = np.where(h > 0.0, h, 0.2 * h) * np.arange(32.0) / 8 + x[0]
    u = (h * 0.0 + x[3]) * r                               # broadcast of an input
    return (np.sum(np.maximum(BLOCK_W2 @ r, -0.3)) + np.dot(s, s) + np.mean(h) * x[1] * x[2]
            + np.sum(u))
