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


def _fixed(shape, first, scale):
    """``scale * cos(k^2)`` for k = first, first + 1, ... laid out in ``shape``: fixed
    stand-ins for trained weights, full rank (``cos(k)`` or ``linspace`` reshaped would
    give matrices of rank 2)."""
    k = np.arange(first, first + int(np.prod(shape)), dtype=np.float64)
    return scale * np.cos(k * k).reshape(shape)


# The weights of ``mlp``, scaled by 2 / sqrt(fan-in) so that at x in [-1, 1]^8 the
# pre-activations have a spread of about 0.8: tanh curves there without saturating.
MLP_W1 = _fixed((16, 8), 0, 2.0 / np.sqrt(8))
MLP_B1 = _fixed((16,), 128, 0.1)
MLP_W2 = _fixed((16, 16), 144, 2.0 / np.sqrt(16))
MLP_B2 = _fixed((16,), 400, 0.1)
MLP_W3 = _fixed((16,), 416, 1.0 / np.sqrt(16))
MLP_B3 = 0.1


def rosenbrock(x, xp=np):
    """sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2: a tridiagonal Hessian.

    >>> import numpy as np, batchdiff as bd
    >>> bd.hessian(rosenbrock, sparse=True)(np.zeros((2, 5)))    # 5 + 2 * 4 non-zeros
    <SparseResult: 2 points of 5x5 matrices, 13 non-zeros each (52.0%), float64>
    """
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def lorenz96(x, xp=np):
    """dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + 8, indices cyclic: 4 non-zeros a row.

    >>> import numpy as np, batchdiff as bd
    >>> bd.jacobian(lorenz96, sparse=True)(np.ones((2, 40)))
    <SparseResult: 2 points of 40x40 matrices, 160 non-zeros each (10.0%), float64>
    """
    return (xp.roll(x, -1) - xp.roll(x, 2)) * xp.roll(x, 1) - x + 8.0


def arm(q, xp=np):
    """Tip of a 2-link planar arm (links ``ARM_LINKS``: 1.0 and 0.7) at joint angles q.

    >>> import numpy as np, batchdiff as bd
    >>> J = bd.jacobian(arm)(np.array([[0.0, 0.0]]))     # stretched out along x
    >>> J[0, 1]                                           # d tip_y / d q: lever arms
    array([1.7, 0.7])
    """
    a = q[0] + q[1]
    return xp.stack([xp.cos(q[0]) + 0.7 * xp.cos(a), xp.sin(q[0]) + 0.7 * xp.sin(a)])


def lennard_jones(r, xp=np):
    """Energy of a cluster of ``len(r) // 3`` atoms (epsilon = sigma = 1); r holds their
    coordinates, x y z atom after atom: sum over pairs of 4 (d^-12 - d^-6).

    >>> import numpy as np, batchdiff as bd
    >>> r = np.array([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])   # two atoms at distance 1
    >>> energy, g = bd.value_and_grad(lennard_jones)(r)   # g: minus the forces
    >>> energy, g[0, [0, 3]]                              # repulsion along x
    (array([0.]), array([ 24., -24.]))
    """
    atoms = r.shape[0] // 3
    energy = 0.0
    for i in range(atoms):
        for j in range(i + 1, atoms):
            d = r[3 * i:3 * i + 3] - r[3 * j:3 * j + 3]
            inv6 = 1.0 / xp.sum(d * d) ** 3
            energy = energy + 4.0 * (inv6 * inv6 - inv6)
    return energy


def mlp(x, xp=np):
    """A tanh MLP 8-16-16-1 with the fixed weights ``MLP_W1`` ... ``MLP_B3``: the network
    of a physics-informed neural network, whose input gradient and Hessian are wanted
    at many points: ``w3 . tanh(W2 tanh(W1 x + b1) + b2) + b3``.

    The weights take the dtype of ``x`` (float32 stays float32 in JAX and PyTorch).

    >>> import numpy as np, batchdiff as bd
    >>> X = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 8))
    >>> g, H = bd.grad(mlp)(X), bd.hessian(mlp)(X)
    >>> g.shape, H.shape
    ((2, 8), (2, 8, 8))
    >>> e, h = np.eye(8), 1e-6                          # central differences of the value
    >>> fd = [(mlp(X[0] + h * e[i]) - mlp(X[0] - h * e[i])) / (2 * h) for i in range(8)]
    >>> bool(np.allclose(g[0], fd, atol=1e-8)), bool(np.allclose(H, H.transpose(0, 2, 1)))
    (True, True)
    """
    def layer(w, b, h):
        return xp.asarray(w, dtype=x.dtype) @ h + xp.asarray(b, dtype=x.dtype)
    h1 = xp.tanh(layer(MLP_W1, MLP_B1, x))
    h2 = xp.tanh(layer(MLP_W2, MLP_B2, h1))
    return xp.sum(xp.asarray(MLP_W3, dtype=x.dtype) * h2) + MLP_B3


def tanh_mlp(width, layers=3, inputs=3, xp=np):
    """A tanh MLP ``inputs-width-...-width-1`` (``layers`` hidden layers) of fixed weights,
    scaled by 2 / sqrt(fan-in): the network of a PINN at the size users run, with a
    dense ``width x width`` product per layer (``batchdiff.blocks``).

    >>> import numpy as np, batchdiff as bd
    >>> f = tanh_mlp(64)
    >>> X = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 3))
    >>> H = bd.hessian(f)(X)
    >>> bool(np.allclose(H, H.transpose(0, 2, 1))), bd.hessian(f).tape(X).num_ops < 100
    (True, True)
    """
    weights, last = tanh_mlp_weights(width, layers, inputs)

    def f(x):
        h = x
        for W, b in weights:
            h = xp.tanh(xp.asarray(W, dtype=x.dtype) @ h + xp.asarray(b, dtype=x.dtype))
        return xp.sum(xp.asarray(last, dtype=x.dtype) * h)
    f.__name__ = f"tanh_mlp_{inputs}_{'_'.join([str(width)] * layers)}_1"
    return f


def tanh_mlp_weights(width, layers=3, inputs=3):
    """The weights of ``tanh_mlp``: ``[(W, b) per hidden layer], w`` (the output row).

    >>> (W, b), = tanh_mlp_weights(16, 1)[0]
    >>> W.shape, b.shape
    ((16, 3), (16,))
    """
    sizes = [inputs] + [width] * layers
    weights = [(_fixed((sizes[k + 1], sizes[k]), 1000 * k, 2.0 / np.sqrt(sizes[k])),
                _fixed((sizes[k + 1],), 1000 * k + 500, 0.1)) for k in range(layers)]
    return weights, _fixed((width,), 999_000, 1.0 / np.sqrt(width))
