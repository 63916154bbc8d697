"""Hand-written analytic Numba kernels: the speed-of-light reference for compare.py.

Each kernel computes a derivative from its closed form, one point per iteration,
parallel over points, writing the full (dense) result array, as an expert would by hand.
A kernel writes into an array it is given; it runs in two ways, both reported:

- ``REUSED``: into one preallocated array, the same every call, as a careful user's
  Newton or ODE loop does: the speed of light, with no page faults on a fresh output;
- ``ALLOCATING``: into ``np.empty`` made for each call, as a function that returns its
  result must (the first touch of a fresh output's pages costs about as much as
  filling it: DESIGN.md, "Facts measured").
"""
import numpy as np
from numba import njit, prange

REUSED = "hand-written, reused buffer"
ALLOCATING = "hand-written, allocating"


def reused(kernel, out):
    """``kernel`` as a call ``X -> out`` that writes into ``out`` every time.

    >>> import numpy as np
    >>> out = np.empty((3, 2, 2))
    >>> run = reused(arm_jacobian, out)
    >>> run(np.zeros((3, 2))) is out
    True
    """
    def run(X):
        kernel(X, out)
        return out
    return run


def allocating(kernel, out_shape):
    """``kernel`` as a call ``X -> new array of shape (B, *out_shape)``.

    >>> run = allocating(arm_jacobian, (2, 2))
    >>> X = np.zeros((3, 2))
    >>> run(X).shape, run(X) is run(X)
    ((3, 2, 2), False)
    """
    def run(X):
        out = np.empty((X.shape[0],) + tuple(out_shape), dtype=X.dtype)
        kernel(X, out)
        return out
    return run


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


@njit(parallel=True, cache=True, error_model="numpy")
def arm_jacobian(Q, J):
    """J[b] = d tip / d q for tip = (cos q0 + 0.7 cos(q0+q1), sin q0 + 0.7 sin(q0+q1))."""
    for b in prange(Q.shape[0]):
        q0 = Q[b, 0]
        a = q0 + Q[b, 1]
        s1, c1 = 0.7 * np.sin(a), 0.7 * np.cos(a)
        J[b, 0, 0] = -np.sin(q0) - s1
        J[b, 0, 1] = -s1
        J[b, 1, 0] = np.cos(q0) + c1
        J[b, 1, 1] = c1


@njit(parallel=True, cache=True, error_model="numpy")
def lennard_jones_hessian(R, H):
    """H[b] = Hessian of sum over pairs of 4 (r^-12 - r^-6), atoms at R[b].reshape(-1, 3).

    For a pair with separation d (r^2 = d.d) and energy e(s), s = r^2:
    d2E/dd2 = 2 e'(s) I + 4 e''(s) d d^T, entering the (i,i), (j,j) blocks with + and
    the (i,j), (j,i) blocks with -.
    """
    n = R.shape[1] // 3
    for b in prange(R.shape[0]):
        for i in range(3 * n):
            for j in range(3 * n):
                H[b, i, j] = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                d0 = R[b, 3 * i] - R[b, 3 * j]
                d1 = R[b, 3 * i + 1] - R[b, 3 * j + 1]
                d2 = R[b, 3 * i + 2] - R[b, 3 * j + 2]
                s = d0 * d0 + d1 * d1 + d2 * d2
                # e(s) = 4 (s^-6 - s^-3)
                e1 = 4.0 * (-6.0 * s ** -7 + 3.0 * s ** -4)
                e2 = 4.0 * (42.0 * s ** -8 - 12.0 * s ** -5)
                d = (d0, d1, d2)
                for p in range(3):
                    for q in range(3):
                        v = 4.0 * e2 * d[p] * d[q]
                        if p == q:
                            v += 2.0 * e1
                        H[b, 3 * i + p, 3 * i + q] += v
                        H[b, 3 * j + p, 3 * j + q] += v
                        H[b, 3 * i + p, 3 * j + q] -= v
                        H[b, 3 * j + p, 3 * i + q] -= v
