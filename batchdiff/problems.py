"""The problems the demo, the benchmarks and the test corpus share, each written once.

Each is a function of one point. ``xp`` stands for the array module: NumPy by default
(batchdiff traces it), JAX's or a PyTorch stand-in where the benchmarks compare the same
function on other libraries.

>>> import numpy as np, batchdiff as bd
>>> bd.grad(rosenbrock)(np.zeros((2, 4)))     # -2 (1 - x_i) for i < 3, 200 (x_3 - x_2^2)
array([[-2., -2., -2.,  0.],
       [-2., -2., -2.,  0.]])
"""
from __future__ import annotations

import numpy as np

ARM_LINKS = (1.0, 0.7)          # the 2-link arm's link lengths (those ``arm`` uses)


def rosenbrock(x, xp=np):
    """sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2: a tridiagonal Hessian."""
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def lorenz96(x, xp=np):
    """dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + 8, indices cyclic: 4 non-zeros a row."""
    return (xp.roll(x, -1) - xp.roll(x, 2)) * xp.roll(x, 1) - x + 8.0


def arm(q, xp=np):
    """Tip of a 2-link planar arm (links ``ARM_LINKS``: 1.0 and 0.7) at joint angles q."""
    a = q[0] + q[1]
    return xp.stack([xp.cos(q[0]) + 0.7 * xp.cos(a), xp.sin(q[0]) + 0.7 * xp.sin(a)])


def lennard_jones(r, xp=np):
    """Energy of a cluster of ``len(r) // 3`` atoms (epsilon = sigma = 1); r holds their
    coordinates, x y z atom after atom: sum over pairs of 4 (d^-12 - d^-6)."""
    atoms = r.shape[0] // 3
    energy = 0.0
    for i in range(atoms):
        for j in range(i + 1, atoms):
            d = r[3 * i:3 * i + 3] - r[3 * j:3 * j + 3]
            inv6 = 1.0 / xp.sum(d * d) ** 3
            energy = energy + 4.0 * (inv6 * inv6 - inv6)
    return energy
