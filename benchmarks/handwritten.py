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

from batchdiff.problems import MLP_B1, MLP_B2, MLP_W1, MLP_W2, MLP_W3

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


# The MLP's kernels take its weights as arguments: Numba would freeze global arrays into
# the compiled code, and its cache would not see a change to them in batchdiff/problems.py.

def mlp_gradient(X, G):
    """G[b] = gradient of ``batchdiff.problems.mlp`` at X[b], by backpropagation.

    >>> from batchdiff.problems import mlp
    >>> G = np.empty((1, 8))
    >>> mlp_gradient(np.zeros((1, 8)), G)
    >>> h = 1e-6
    >>> bool(np.isclose(G[0, 3], (mlp(h * np.eye(8)[3]) - mlp(-h * np.eye(8)[3])) / (2 * h)))
    True
    """
    _mlp_gradient(X, MLP_W1, MLP_B1, MLP_W2, MLP_B2, MLP_W3, G)


def mlp_hessian(X, H):
    """H[b] = Hessian of ``batchdiff.problems.mlp`` at X[b], in closed form.

    >>> import batchdiff as bd
    >>> from batchdiff.problems import mlp
    >>> X = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 8))
    >>> H = np.empty((2, 8, 8))
    >>> mlp_hessian(X, H)
    >>> bool(np.allclose(H, bd.hessian(mlp)(X), rtol=0.0, atol=1e-12))
    True
    """
    _mlp_hessian(X, MLP_W1, MLP_B1, MLP_W2, MLP_B2, MLP_W3, H)


@njit(parallel=True, cache=True, error_model="numpy")
def _mlp_gradient(X, W1, b1, W2, b2, w3, G):
    """G[b] = W1^T (u * s'(a1)), u = W2^T (w3 * s'(a2)): the gradient of
    w3 . tanh(a2) with a2 = W2 tanh(a1) + b2, a1 = W1 X[b] + b1, s' = 1 - tanh^2."""
    n1, n = W1.shape
    for b in prange(X.shape[0]):
        h1 = np.empty(n1)
        for i in range(n1):
            a = b1[i]
            for j in range(n):
                a += W1[i, j] * X[b, j]
            h1[i] = np.tanh(a)
        u = np.zeros(n1)
        for k in range(W2.shape[0]):
            a = b2[k]
            for i in range(n1):
                a += W2[k, i] * h1[i]
            t = np.tanh(a)
            g2 = w3[k] * (1.0 - t * t)
            for i in range(n1):
                u[i] += W2[k, i] * g2
        for j in range(n):
            G[b, j] = 0.0
        for i in range(n1):
            g1 = u[i] * (1.0 - h1[i] * h1[i])
            for j in range(n):
                G[b, j] += W1[i, j] * g1


@njit(parallel=True, cache=True, error_model="numpy")
def _mlp_hessian(X, W1, b1, W2, b2, w3, H):
    """H[b] = W1^T diag(u * s''(a1)) W1 + M^T diag(w3 * s''(a2)) M at X[b], where
    M = W2 diag(s'(a1)) W1 (d a2 / dx), u = W2^T (w3 * s'(a2)) (d f / d tanh(a1)),
    s' = 1 - tanh^2 and s'' = -2 tanh (1 - tanh^2): the derivative of the gradient
    W1^T (u * s'(a1)), through s'(a1) and through u."""
    n1, n = W1.shape
    n2 = W2.shape[0]
    for b in prange(X.shape[0]):
        s1 = np.empty(n1)           # s'(a1)
        c1 = np.empty(n1)           # u * s''(a1)
        h1 = np.empty(n1)
        for i in range(n1):
            a = b1[i]
            for j in range(n):
                a += W1[i, j] * X[b, j]
            h1[i] = np.tanh(a)
            s1[i] = 1.0 - h1[i] * h1[i]
        u = np.zeros(n1)
        c2 = np.empty(n2)           # w3 * s''(a2)
        for k in range(n2):
            a = b2[k]
            for i in range(n1):
                a += W2[k, i] * h1[i]
            t = np.tanh(a)
            s = 1.0 - t * t
            c2[k] = -2.0 * w3[k] * t * s
            for i in range(n1):
                u[i] += W2[k, i] * w3[k] * s
        for i in range(n1):
            c1[i] = -2.0 * u[i] * h1[i] * s1[i]
        M = np.zeros((n2, n))
        for k in range(n2):
            for i in range(n1):
                w = W2[k, i] * s1[i]
                for j in range(n):
                    M[k, j] += w * W1[i, j]
        for p in range(n):
            for q in range(p, n):
                v = 0.0
                for i in range(n1):
                    v += W1[i, p] * W1[i, q] * c1[i]
                for k in range(n2):
                    v += M[k, p] * M[k, q] * c2[k]
                H[b, p, q] = v
                H[b, q, p] = v


# -- deep tanh MLPs (batchdiff.problems.tanh_mlp): gradient by backpropagation, input
#    Hessian by second-order forward propagation, a point at a time, each product in the
#    form LLVM vectorises without reordering sums (a row of W^T times a scalar)

def deep_mlp(width, layers=3, inputs=3):
    """``(gradient, hessian)`` kernels of ``tanh_mlp(width, layers, inputs)``.

    >>> import batchdiff as bd
    >>> from batchdiff.problems import tanh_mlp
    >>> grad, hess = deep_mlp(8, 2)
    >>> X = np.random.default_rng(0).uniform(-1.0, 1.0, (3, 3))
    >>> G, H = np.empty((3, 3)), np.empty((3, 3, 3))
    >>> grad(X, G); hess(X, H)
    >>> f = tanh_mlp(8, 2)
    >>> bool(np.allclose(G, bd.grad(f)(X))), bool(np.allclose(H, bd.hessian(f)(X)))
    (True, True)
    """
    from batchdiff.problems import tanh_mlp_weights
    weights, last = tanh_mlp_weights(width, layers, inputs)
    W1, b1 = weights[0]
    WT = np.ascontiguousarray(np.stack([W.T for W, _ in weights[1:]])) if layers > 1 else \
        np.zeros((0, width, width))
    B = np.ascontiguousarray(np.stack([b for _, b in weights]))
    W1T = np.ascontiguousarray(W1.T)

    def gradient(X, G):
        _deep_mlp_gradient(X, W1T, WT, B, last, G)

    def hessian(X, H):
        _deep_mlp_hessian(X, W1T, WT, B, last, H)
    return gradient, hessian


@njit(cache=True, error_model="numpy")
def _layers(x, W1T, WT, B, Hs):
    """Hs[l] = the activations of hidden layer l at the point x."""
    w = B.shape[1]
    z = B[0].copy()
    for j in range(x.shape[0]):
        xj = x[j]
        for i in range(w):
            z[i] += W1T[j, i] * xj
    for i in range(w):
        Hs[0, i] = np.tanh(z[i])
    for layer in range(1, B.shape[0]):
        z[:] = B[layer]
        for j in range(w):
            hj = Hs[layer - 1, j]
            for i in range(w):
                z[i] += WT[layer - 1, j, i] * hj
        for i in range(w):
            Hs[layer, i] = np.tanh(z[i])


@njit(parallel=True, cache=True, error_model="numpy")
def _deep_mlp_gradient(X, W1T, WT, B, v, G):
    """G[b] = W1^T (s'_1 * W2^T (s'_2 * ... W_L^T (s'_L * v))), s' = 1 - tanh^2."""
    n_points, n = X.shape
    L, w = B.shape
    for chunk in prange((n_points + 255) // 256):
        Hs = np.empty((L, w))
        g = np.empty(w)
        up = np.empty(w)
        for b in range(chunk * 256, min(n_points, chunk * 256 + 256)):
            _layers(X[b], W1T, WT, B, Hs)
            for i in range(w):
                g[i] = v[i] * (1.0 - Hs[L - 1, i] * Hs[L - 1, i])
            for layer in range(L - 1, 0, -1):
                for j in range(w):        # up = W^T g: row j of W^T is column j of W
                    s = 0.0
                    for i in range(w):
                        s += WT[layer - 1, j, i] * g[i]
                    up[j] = s
                for j in range(w):
                    g[j] = up[j] * (1.0 - Hs[layer - 1, j] * Hs[layer - 1, j])
            for j in range(n):
                s = 0.0
                for i in range(w):
                    s += W1T[j, i] * g[i]
                G[b, j] = s


@njit(parallel=True, cache=True, error_model="numpy")
def _deep_mlp_hessian(X, W1T, WT, B, v, H):
    """H[b] = sum_i v_i T_L[pq, i]: per layer, with z = W h + b, h = tanh z,
    s' = 1 - h^2, s'' = -2 h s': first derivatives J = s' * (W J_prev) and second
    T_pq = s' * (W T_prev,pq) + s'' * (W J_prev)_p * (W J_prev)_q (J_0 = I, T_0 = 0)."""
    n_points, n = X.shape
    L, w = B.shape
    pairs = n * (n + 1) // 2
    for chunk in prange((n_points + 255) // 256):
        Hs = np.empty((L, w))
        J = np.empty((n, w))
        Jz = np.empty((n, w))
        T = np.empty((pairs, w))
        Tz = np.empty((pairs, w))
        for b in range(chunk * 256, min(n_points, chunk * 256 + 256)):
            _layers(X[b], W1T, WT, B, Hs)
            for p in range(n):
                Jz[p] = W1T[p]
            Tz[:] = 0.0
            for layer in range(L):
                if layer:                 # Jz = W J, Tz = W T: rows of W^T times scalars
                    Jz[:] = 0.0
                    Tz[:] = 0.0
                    for j in range(w):
                        row = WT[layer - 1, j]
                        for p in range(n):
                            c = J[p, j]
                            for i in range(w):
                                Jz[p, i] += row[i] * c
                        for k in range(pairs):
                            c = T[k, j]
                            for i in range(w):
                                Tz[k, i] += row[i] * c
                k = 0
                for p in range(n):
                    for q in range(p, n):
                        for i in range(w):
                            h = Hs[layer, i]
                            s1 = 1.0 - h * h
                            T[k, i] = s1 * Tz[k, i] - 2.0 * h * s1 * Jz[p, i] * Jz[q, i]
                        k += 1
                for p in range(n):
                    for i in range(w):
                        h = Hs[layer, i]
                        J[p, i] = (1.0 - h * h) * Jz[p, i]
            k = 0
            for p in range(n):
                for q in range(p, n):
                    s = 0.0
                    for i in range(w):
                        s += v[i] * T[k, i]
                    H[b, p, q] = s
                    H[b, q, p] = s
                    k += 1
