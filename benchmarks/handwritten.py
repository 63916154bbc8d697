"""Hand-written analytic Numba kernels: the speed-of-light reference for compare.py.

Each kernel computes a derivative from its closed form, one point per iteration,
parallel over points, writing the full result array, as an expert would by hand.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, error_model="numpy")
def rosenbrock_hessian(X, H):
    """H[b] = Hessian of sum(100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2) at X[b]."""
    B, n = X.shape
    for b in prange(B):
        for i in range(n):
            for j in range(n):
                H[b, i, j] = 0.0
        for i in range(n - 1):
            xi = X[b, i]
            H[b, i, i] += 1200.0 * xi * xi - 400.0 * X[b, i + 1] + 2.0
            H[b, i + 1, i + 1] += 200.0
            H[b, i, i + 1] = -400.0 * xi
            H[b, i + 1, i] = -400.0 * xi


@njit(parallel=True, cache=True, error_model="numpy")
def lorenz96_jacobian(X, J):
    """J[b] = Jacobian of F_i = (x[i+1] - x[i-2]) x[i-1] - x[i] + 8 (cyclic) at X[b]."""
    B, n = X.shape
    for b in prange(B):
        for i in range(n):
            for j in range(n):
                J[b, i, j] = 0.0
        for i in range(n):
            J[b, i, (i - 2) % n] = -X[b, (i - 1) % n]
            J[b, i, (i - 1) % n] = X[b, (i + 1) % n] - X[b, (i - 2) % n]
            J[b, i, i] = -1.0
            J[b, i, (i + 1) % n] = X[b, (i - 1) % n]
