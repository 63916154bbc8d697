"""The benchmark problems: each a per-point function for batchdiff, the same function
for JAX and PyTorch, and a hand-written analytic Numba kernel of its derivative.

Shared by ``compare.py`` and the asv suite. A problem's ``numpy`` function is written
once with ``xp`` standing for the array module, so the batchdiff, JAX and PyTorch
versions are the same code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import handwritten as hw


def rosenbrock(x, xp=np):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def lorenz96(x, xp=np):
    return (xp.roll(x, -1) - xp.roll(x, 2)) * xp.roll(x, 1) - x + 8.0


def arm(q, xp=np):
    """Tip of a 2-link planar arm (links 1.0 and 0.7) at joint angles q."""
    a = q[0] + q[1]
    return xp.stack([xp.cos(q[0]) + 0.7 * xp.cos(a), xp.sin(q[0]) + 0.7 * xp.sin(a)])


def lennard_jones(r, xp=np):
    """Energy of a 4-atom Lennard-Jones cluster (epsilon = sigma = 1), r = 12 coordinates."""
    energy = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            d = r[3 * i:3 * i + 3] - r[3 * j:3 * j + 3]
            inv6 = 1.0 / xp.sum(d * d) ** 3
            energy = energy + 4.0 * (inv6 * inv6 - inv6)
    return energy


def chain(steps, n=8):
    """``t = sin(t) * x[k % n] + 0.5``, ``steps`` times: a deep chain of dependent ops."""
    def f(x):
        t = x[0]
        for k in range(steps):
            t = np.sin(t) * x[k % n] + 0.5
        return t
    return f


def _lj_points(batch, rng):
    base = np.array([0, 0, 0, 1.12, 0, 0, 0.56, 0.97, 0, 0.56, 0.32, 0.91])
    return base + 0.05 * rng.standard_normal((batch, 12))


@dataclass
class Problem:
    name: str
    transform: str                 # "hessian" or "jacobian"
    fn: Callable                   # fn(x, xp)
    dim: int
    batch: int                     # points at which it is compared
    handwritten: Callable          # handwritten(X) -> result
    make_points: Callable = None

    def points(self, batch, rng, dtype=np.float64):
        x = (self.make_points(batch, rng) if self.make_points
             else rng.uniform(-1.0, 1.0, size=(batch, self.dim)))
        return np.ascontiguousarray(x, dtype=dtype)


def _into(kernel, shape):
    def run(X):
        out = np.empty((X.shape[0],) + shape, dtype=X.dtype)
        kernel(X, out)
        return out
    return run


PROBLEMS = [
    Problem("Rosenbrock n=10", "hessian", rosenbrock, 10, 100_000,
            _into(hw.rosenbrock_hessian, (10, 10))),
    Problem("Rosenbrock n=100", "hessian", rosenbrock, 100, 10_000,
            _into(hw.rosenbrock_hessian, (100, 100))),
    Problem("Lorenz-96 n=40", "jacobian", lorenz96, 40, 100_000,
            _into(hw.lorenz96_jacobian, (40, 40))),
    Problem("2-link arm", "jacobian", arm, 2, 100_000, _into(hw.arm_jacobian, (2, 2))),
    Problem("Lennard-Jones 4 atoms", "hessian", lennard_jones, 12, 100_000,
            _into(hw.lennard_jones_hessian, (12, 12)), _lj_points),
]
