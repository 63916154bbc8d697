"""Block instructions (``batchdiff.blocks``): traced, differentiated and run on every executor.

The oracles: central differences of the function run in plain NumPy, and the scalar
path, the same function traced with blocks off (``block_trace.LINEAR_MIN`` and
``LINEAR_MIN_ROWS`` beyond every matrix: ``W @ x`` unrolled into scalar multiply-adds).
The executors are held against the NumPy reference interpreter, and the reference
against ``blocks.expand`` (the block tape unrolled into scalars). The matrices here are
small (kernels compile sooner) and made blocks from 128 entries (``blocks_from_128``);
``block_everything`` of the corpus has blocks at the default thresholds.
"""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff import block_trace
from batchdiff.blocks import BLOCK_OPS, expand
from batchdiff.interpreter import evaluate
from corpus import block_everything as everything

RNG = np.random.default_rng(2024)
W1 = RNG.normal(size=(16, 8)) / np.sqrt(8)
B1 = RNG.normal(size=16) * 0.1
W2 = RNG.normal(size=(16, 16)) / 4
W3 = RNG.normal(size=(8, 16)) / 4
V = RNG.normal(size=16)
M = RNG.normal(size=(32, 4)) / 2
U = RNG.normal(size=32)


def mlp(x):
    h = np.tanh(W1 @ x + B1)
    h = np.tanh(W2 @ h)
    return np.sum(V * h) + 0.5


def right(x):                              # x @ W: W's transpose times x
    return np.sum(np.sin(x @ W3) ** 2)


def matrix(X):                             # a traced matrix: X @ W, rows of X are groups
    H = np.tanh(X @ W3)                   # (4, 16)
    return np.sum(np.mean(H, axis=0) * V) + np.sum(H[1] * H[2])


def left_matrix(X):                        # W @ X: columns of X are groups
    return np.sum(np.cos(M @ X) * 0.5, axis=1) @ U / 4


def contractions(x):
    a = np.einsum("ij,j->i", W1, x)
    b = np.tensordot(W1, x, axes=1)
    c = np.dot(x, W1.T)
    d = np.einsum("j,ij", x, W1)
    return np.sum(a * b) + np.sum(np.exp(-c * c)) + np.inner(d, b) / 8


def piecewise(x):
    h = W1 @ x
    relu = np.maximum(h, 0.0)
    leaky = np.where(h > 0.2, h, 0.1 * h)
    return (np.sum(relu * V) + np.sum(np.clip(h, -0.5, 0.5) ** 2) + np.sum(np.abs(leaky))
            + np.sum(np.minimum(h, x[0])))


def mixed(x):                              # scalars and blocks side by side
    h = W1 @ x
    g = np.tanh(W1 @ (x * x) + x[3])
    return h[0] * h[3] + np.sum(np.exp(-h ** 2)) * x[1] + np.dot(h, g) + x[2] ** 3


def quotients(x):
    h = W1 @ x
    return np.sum(h ** 2 / (1.0 + h ** 2)) + np.sum(np.sqrt(1.0 + h * h)) + np.sum(
        np.log1p(h * h) * np.arange(16.0)) + np.sum((1.5 + np.sin(h)) ** x[0])


def vector_out(x):                         # a vector output: its elements are index nodes
    h = np.tanh(W1 @ x)
    return np.concatenate([h[:5] * x[0], [np.sum(h)]])


FUNCTIONS = {
    "mlp": (mlp, (8,)),
    "right": (right, (8,)),
    "matrix": (matrix, (4, 8)),
    "left_matrix": (left_matrix, (4, 3)),
    "contractions": (contractions, (8,)),
    "piecewise": (piecewise, (8,)),
    "mixed": (mixed, (8,)),
    "quotients": (quotients, (8,)),
    "vector_out": (vector_out, (8,)),
}
SCALAR_OUT = [n for n in FUNCTIONS if n != "vector_out"]


def points(name, n=5, dtype=np.float64, seed=0):
    f, shape = FUNCTIONS[name]
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n,) + shape).astype(dtype)


@pytest.fixture(autouse=True)
def blocks_from_128(monkeypatch):
    """The small matrices of these functions are blocks: from 128 entries."""
    monkeypatch.setattr(block_trace, "LINEAR_MIN", 128)


def _scalar_path(make, f, X, **kwargs):
    """``make(f)`` on the reference interpreter, traced with blocks off."""
    old = block_trace.LINEAR_MIN, block_trace.LINEAR_MIN_ROWS
    block_trace.LINEAR_MIN = block_trace.LINEAR_MIN_ROWS = 10 ** 9
    try:
        return make(f, backend="numpy", **kwargs)(*X)
    finally:
        block_trace.LINEAR_MIN, block_trace.LINEAR_MIN_ROWS = old


def fd_jacobian(f, x, h=1e-6):
    y0 = np.asarray(f(x), dtype=float)
    J = np.empty(y0.shape + x.shape)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        J[(Ellipsis,) + idx] = (np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h)
    return J


@pytest.mark.parametrize("name", FUNCTIONS)
def test_products_with_constant_matrices_trace_to_blocks(name):
    f, shape = FUNCTIONS[name]
    tape = bd.grad(f).tape(points(name)) if name in SCALAR_OUT else \
        bd.jacobian(f).tape(points(name))
    assert tape.has_blocks and tape.op_counts["linear"] >= 1, tape.op_counts


def test_small_matrices_stay_unrolled(monkeypatch):
    monkeypatch.undo()                   # the default thresholds
    for W, blocks in ((np.ones((4, 3)), False), (np.ones((16, 16)), False),
                      (np.ones((32, 2)), True), (np.ones((24, 24)), True)):
        tape = bd.grad(lambda x: np.sum(np.tanh(W @ x))).tape(np.ones((1, W.shape[1])))
        assert tape.has_blocks == blocks, W.shape
        assert ("linear" in tape.op_counts) == blocks


@pytest.mark.parametrize("name", FUNCTIONS)
def test_values_and_first_derivatives_match_differences(name):
    f, shape = FUNCTIONS[name]
    X = points(name)
    value = np.stack([f(x) for x in X])
    J = np.stack([fd_jacobian(f, x) for x in X])
    if name in SCALAR_OUT:
        v, g = bd.value_and_grad(f, backend="numpy")(X)
        np.testing.assert_allclose(v, value, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(g, J, rtol=1e-6, atol=1e-7)
    else:
        y, = (bd.jvp(f, backend="numpy")(X, np.zeros_like(X))[0],)
        np.testing.assert_allclose(y, value, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(bd.jacobian(f, backend="numpy")(X), J, rtol=1e-6, atol=1e-7)
    for mode in ("forward", "reverse"):
        got = bd.jacobian(f, backend="numpy", mode=mode)(X)
        np.testing.assert_allclose(got, J, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", SCALAR_OUT)
def test_hessians_match_differences_of_the_scalar_paths_gradient(name):
    f, shape = FUNCTIONS[name]
    X = points(name)
    H = bd.hessian(f, backend="numpy")(X)
    n = int(np.prod(shape))
    h = 1e-5
    grad = lambda Y: _scalar_path(bd.grad, f, [Y])  # noqa: E731
    fd = np.stack([(grad(X + h * e.reshape(shape)) - grad(X - h * e.reshape(shape))) / (2 * h)
                   for e in np.eye(n)], axis=-1).reshape(H.shape)
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(H, np.swapaxes(H.reshape(len(X), n, n), 1, 2).reshape(H.shape),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("kind", ["jacobian", "hessian", "jvp", "vjp", "hvp"])
def test_blocks_agree_with_the_scalar_path(name, kind):
    f, shape = FUNCTIONS[name]
    if kind in ("hvp",) and name not in SCALAR_OUT:
        pytest.skip("hvp needs a scalar output")
    X = points(name)
    rng = np.random.default_rng(1)
    extra = []
    if kind in ("jvp", "hvp"):
        extra = [rng.normal(size=X.shape)]
    elif kind == "vjp":
        extra = [rng.normal(size=np.shape(bd.jvp(f, backend="numpy")(X, X)[0]))]
    make = getattr(bd, kind)
    got = make(f, backend="numpy")(X, *extra)
    ref = _scalar_path(make, f, [X, *extra])
    for g, r in zip(got if isinstance(got, tuple) else (got,),
                    ref if isinstance(ref, tuple) else (ref,)):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", SCALAR_OUT)
def test_expanded_tape_computes_the_same(name):
    f, shape = FUNCTIONS[name]
    X = points(name)
    tape = bd.hessian(f).tape(X)
    scalar = expand(tape)
    assert not scalar.has_blocks and len(scalar.outputs) == len(tape.outputs)
    flat = X.reshape(len(X), -1)
    np.testing.assert_allclose(evaluate(tape, [flat], len(X), np.float64),
                               evaluate(scalar, [flat], len(X), np.float64),
                               rtol=1e-12, atol=1e-12)


def test_tape_sizes_grow_with_block_instructions_not_width():
    def net(width):
        W = np.cos(np.arange(width * width, dtype=float)).reshape(width, width) / width
        A = np.cos(np.arange(width * 3, dtype=float)).reshape(width, 3)
        return lambda x: np.sum(np.tanh(W @ np.tanh(A @ x)))
    sizes = [bd.hessian(net(w)).tape(np.ones((1, 3))).num_ops for w in (64, 128, 256)]
    assert sizes[0] == sizes[1] == sizes[2] < 100, sizes


def test_every_block_op_is_used():
    seen = set()
    for name, (f, shape) in FUNCTIONS.items():
        make = bd.hessian if name in SCALAR_OUT else bd.jacobian
        seen.update(make(f).tape(points(name)).op_counts)
    assert set(BLOCK_OPS) <= seen, set(BLOCK_OPS) - seen


# -- executors ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_replay_matches_reference(name, dtype):
    f, shape = FUNCTIONS[name]
    X = points(name, n=77, dtype=dtype)
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=3e-5, atol=3e-5)
    for kind in (("grad", "hessian") if name in SCALAR_OUT else ("jacobian",)):
        make = getattr(bd, kind)
        ref = make(f, backend="numpy")(X)
        got = make(f, backend="numba", method="replay")(X)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("method", ["replay", "compiled"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_block_segment_kind_on_numba(method, dtype):
    X = np.random.default_rng(5).uniform(-1, 1, (300, 8)).astype(dtype)
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=5e-5, atol=5e-5)
    tape = bd.hessian(everything).tape(X)
    assert {"linear", "sum", "pack", "index", "broadcast"} <= set(tape.op_counts)
    for kind in ("value_and_grad", "hessian"):
        make = getattr(bd, kind)
        ref = make(everything, backend="numpy")(X)
        got = make(everything, backend="numba", method=method)(X)
        for g, r in zip(got if isinstance(got, tuple) else (got,),
                        ref if isinstance(ref, tuple) else (ref,)):
            np.testing.assert_allclose(g, r, **tol)


def test_compiled_blocks_run_in_parallel_on_large_batches():
    X = np.random.default_rng(6).uniform(-1, 1, (70_001, 8))
    got = bd.hessian(everything, method="compiled")(X)
    np.testing.assert_allclose(got[::997], bd.hessian(everything, backend="numpy")(X[::997]),
                               rtol=1e-11, atol=1e-11)


def test_nan_and_inf_propagate_through_blocks():
    X = points("mlp", n=3)
    X[0, 2] = np.nan
    X[1, 5] = np.inf
    for method in ("replay", "compiled"):
        g = bd.hessian(everything, method=method)(X)
        ref = bd.hessian(everything, backend="numpy")(X)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(ref))
        assert np.isnan(g[0]).any()


# -- composition, structure, printing ---------------------------------------------------------

def test_third_derivatives_compose_through_blocks():
    X = points("mlp", n=3)
    T = bd.jacobian(bd.hessian(mlp))(X)
    h = 1e-5
    H = lambda Y: bd.hessian(mlp, backend="numpy")(Y)  # noqa: E731
    fd = np.stack([(H(X + h * e) - H(X - h * e)) / (2 * h) for e in np.eye(8)], axis=-1)
    np.testing.assert_allclose(T, fd, rtol=1e-6, atol=1e-6)


def test_a_closure_over_a_block_in_a_nested_transform():
    def outer(x):
        h = np.tanh(W1 @ x)                           # a block of the outer trace
        inner = bd.grad(lambda y: np.sum(np.sin(h * y[0]) * y[1]))
        return np.sum(inner(np.stack([x[0], x[1]])))
    X = points("mlp", n=4)
    plain = lambda x: np.sum(  # noqa: E731
        [np.sum(np.cos(np.tanh(W1 @ x) * x[0]) * np.tanh(W1 @ x) * x[1]),
         np.sum(np.sin(np.tanh(W1 @ x) * x[0]))])
    np.testing.assert_allclose(bd.grad(outer, backend="numpy")(X),
                               np.stack([fd_jacobian(plain, x) for x in X]), rtol=1e-6, atol=1e-7)


def test_sparse_hessian_pattern_is_exact_across_blocks():
    def f(x):
        return np.sum(np.tanh(W1 @ x[:8])) + np.sum(x[8:] ** 3)
    X = np.random.default_rng(3).uniform(-1, 1, (4, 11))
    sparse = bd.hessian(f, sparse=True)(X)
    dense = bd.hessian(f, backend="numpy")(X)
    expected = np.zeros((11, 11), dtype=bool)
    expected[:8, :8] = True
    expected[8:, 8:] = np.eye(3, dtype=bool)
    np.testing.assert_array_equal(sparse.pattern.to_scipy().toarray(), expected)
    np.testing.assert_allclose(sparse.to_dense(), dense, rtol=1e-12, atol=1e-12)


def test_tape_prints_block_instructions():
    X = points("matrix")
    text = str(bd.jvp(matrix).tape(X, X))           # f's value is among its outputs
    assert "linear[16x8, g=4]" in text and "  : [64]" in text
    assert "linear[1x16, g=4]" not in text      # mean over axis 0 of (4, 16): h = 16
    assert "linear[1x4, h=16]" in text


def test_assigning_into_a_block_backed_array_keeps_the_other_elements():
    def f(x):
        h = W1 @ x
        h[0] = x[0] ** 2
        return np.sum(h * h)
    X = points("mlp", n=3)
    fd = np.stack([fd_jacobian(f, x) for x in X])
    np.testing.assert_allclose(bd.grad(f, backend="numpy")(X), fd, rtol=1e-6, atol=1e-7)


def test_contractions_that_do_not_fit_a_block_are_unrolled():
    def f(x):
        X2 = x.reshape(2, 4)
        return np.sum(np.einsum("ij,ij->i", X2, W1[:2, :4])) + np.sum(
            np.tensordot(W1.reshape(16, 2, 4), X2, axes=([2, 1], [1, 0])))
    X = points("mlp", n=3)
    fd = np.stack([fd_jacobian(f, x) for x in X])
    np.testing.assert_allclose(bd.grad(f, backend="numpy")(X), fd, rtol=1e-6, atol=1e-7)


def test_mismatched_product_shapes_raise_numpys_error():
    with pytest.raises(ValueError):
        bd.grad(lambda x: np.sum(W1 @ x[:7]))(points("mlp"))


def test_a_product_of_constants_held_in_a_traced_array_is_computed():
    """A traced array whose elements all turned out constant (the fuzzer's graph 401):
    its product with a matrix is numbers, not a block."""
    def f(x):
        c = np.where(1.0 != np.e, np.e, x[1])          # constant, in a traced array
        v = np.stack([np.arctan2(c, -1.0), 0.5, -1.0])
        return np.sum(np.tanh(W3.T @ np.tile(v, 3)[:8])) * x[0] + np.sum(np.tanh(W1 @ (0 * x + 1)))
    X = points("mlp", n=2)
    np.testing.assert_allclose(bd.grad(f, backend="numpy")(X),
                               np.stack([fd_jacobian(f, x) for x in X]), rtol=1e-6, atol=1e-7)
