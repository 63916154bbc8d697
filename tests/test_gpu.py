"""The CuPy back end on a real GPU agrees with the reference interpreter.

Skipped where CuPy is missing or sees no CUDA device (``import cupy`` works without
one; ``cupy_exec.available()`` asks the driver). The generated source itself is
compiled and checked without a GPU in ``test_cuda_compile.py``.
"""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff.kernels import cupy_exec
from corpus import CASES, SCALAR, points, tangents

pytestmark = pytest.mark.skipif(not cupy_exec.available(),
                                reason="needs CuPy and a CUDA device")

# Relative to the largest entry of the result: NVRTC contracts a * b + c into fused
# multiply-adds (its default, as every CUDA compiler's), so a GPU result differs from the
# CPU's in the last bits, and an entry where terms cancel differs by a few ulps of the
# terms, not of itself (float32 Lennard-Jones: 1.5e-4 on an entry of 0.18 among entries
# of 600).
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


def close(got, ref, rtol=1e-12):
    """``got`` (CuPy or NumPy) equals ``ref`` up to ``rtol`` of ref's largest entry."""
    import cupy
    got = cupy.asnumpy(got)
    finite = np.abs(ref[np.isfinite(ref)])
    scale = float(np.max(finite, initial=0.0))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


@pytest.fixture(scope="module")
def cp():
    import cupy
    return cupy


def _reference(make, f, argnums, in_axes, args, cp):
    host = [cp.asnumpy(a) if isinstance(a, cp.ndarray) else a for a in args]
    return make(f, argnums, in_axes=in_axes, backend="numpy")(*host)


def _assert_same(got, ref, cp, dtype):
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref)
        for g, r in zip(got, ref):
            _assert_same(g, r, cp, dtype)
        return
    assert isinstance(got, cp.ndarray), type(got)
    assert got.dtype == ref.dtype == dtype and got.shape == ref.shape
    close(got, ref, TOLERANCE[dtype])


def _check_corpus_case(cp, case, dtype, batch, to_device, seed):
    """Every transform of ``case`` on device inputs made by ``to_device`` (NumPy -> GPU)."""
    rng = np.random.default_rng(seed)
    name, f, shapes, argnums, in_axes = case
    args = points(case, batch, dtype, rng)
    kinds = ["jacobian", "hessian", "jvp"] + (["grad", "value_and_grad", "hvp"]
                                             if name in SCALAR else [])
    for kind in kinds:
        extra = tangents(case, args, rng) if kind in ("jvp", "hvp") else []
        make = getattr(bd, kind)
        got = make(f, argnums, in_axes=in_axes)(*map(to_device, args + extra))  # on cupy
        _assert_same(got, _reference(make, f, argnums, in_axes, args + extra, cp), cp, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gpu_matches_reference(cp, case, dtype):
    """Every transform of every corpus case, CuPy inputs in, CuPy arrays (B, ...) out."""
    _check_corpus_case(cp, case, dtype, 1000, cp.asarray, seed=5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_torch_cuda_tensors_match_reference(cp, case, dtype):
    """The same, with PyTorch CUDA tensors in (DLPack, no copy), tangents included."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch was built without CUDA")
    _check_corpus_case(cp, case, dtype, 300,
                       lambda a: torch.as_tensor(np.asarray(a), device="cuda"), seed=12)


def test_grid_stride_loop_covers_a_batch_larger_than_the_grid(cp):
    """More points than threads in the capped grid, and a ragged last block."""
    f = CASES[0][1]
    x = cp.random.default_rng(1).uniform(0, 1, size=(3_000_001, 6))
    got = bd.grad(f, backend="cupy")(x)
    close(cp.asnumpy(got), bd.grad(f, backend="numpy")(cp.asnumpy(x)))


def test_results_are_batch_fastest_views(cp):
    f = CASES[0][1]
    h = bd.hessian(f)(cp.random.default_rng(2).uniform(0, 1, size=(4096, 6)))
    assert h.shape == (4096, 6, 6) and h.strides[0] == h.itemsize


def test_nan_and_inf_propagate_on_gpu(cp):
    f = lambda v: np.sqrt(v[0]) + np.log(v[1])  # noqa: E731
    x = np.array([[-1.0, 1.0], [4.0, 0.0], [np.nan, 2.0], [np.inf, 1.0], [0.0, -0.0]])
    got = bd.value_and_grad(f)(cp.asarray(x))
    ref = bd.value_and_grad(f, backend="numpy")(x)
    for g, r in zip(got, ref):
        close(cp.asnumpy(g), r)


def test_empty_batch_on_gpu(cp):
    out = bd.hessian(CASES[0][1])(cp.zeros((0, 6)))
    assert isinstance(out, cp.ndarray) and out.shape == (0, 6, 6)


def test_numpy_inputs_with_backend_cupy(cp):
    x = np.random.default_rng(3).uniform(size=(100, 6))
    got = bd.hessian(CASES[0][1], backend="cupy")(x)
    close(cp.asnumpy(got), bd.hessian(CASES[0][1], backend="numpy")(x))


def test_out_buffers_on_gpu_are_written_and_returned(cp):
    """``out=`` with the result's own (batch-fastest) array and a user's C-contiguous one."""
    f = CASES[1][1]                                     # Lorenz-96, n = 8
    x = np.random.default_rng(4).uniform(-2, 2, size=(1000, 8))
    ref = bd.jacobian(f, backend="numpy")(x)
    g = bd.jacobian(f)
    X = cp.asarray(x)
    J = g(X)
    for buffer in (J, cp.empty((1000, 8, 8))):
        buffer[...] = cp.nan
        assert g(X, out=buffer) is buffer
        close(cp.asnumpy(buffer), ref)


def test_out_tuple_of_value_and_grad_on_gpu(cp):
    f = CASES[0][1]                                     # Rosenbrock, n = 6
    x = np.random.default_rng(6).uniform(size=(700, 6))
    value, grad = cp.full(700, cp.nan), cp.full((700, 6), cp.nan)
    got = bd.value_and_grad(f)(cp.asarray(x), out=(value, grad))
    assert got[0] is value and got[1] is grad
    for g, r in zip((value, grad), bd.value_and_grad(f, backend="numpy")(x)):
        close(cp.asnumpy(g), r)


def test_sparse_hessian_stays_on_the_gpu(cp):
    """Values (B, nnz) C-contiguous on the device; dense and cupyx CSR views agree."""
    import cupyx.scipy.sparse
    f = CASES[0][1]                                     # Rosenbrock: a tridiagonal Hessian
    x = np.random.default_rng(7).uniform(size=(500, 6))
    ref = bd.hessian(f, backend="numpy")(x)
    h = bd.hessian(f, sparse=True)(cp.asarray(x))
    assert isinstance(h.values, cp.ndarray) and h.values.flags.c_contiguous
    assert h.values.shape == (500, h.nnz) and h.nnz < 36
    dense = h.to_dense()
    close(dense.get() if isinstance(dense, cp.ndarray) else dense, ref)
    point = h.to_scipy(0)
    assert isinstance(point, cupyx.scipy.sparse.csr_matrix)
    close(cp.asnumpy(point.toarray()), ref[0])


def test_torch_cuda_tensors_come_in_through_dlpack(cp):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch was built without CUDA")
    f = CASES[0][1]
    x = torch.rand(500, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    got = bd.hessian(f)(x)
    assert isinstance(got, cp.ndarray) and got.shape == (500, 6, 6)
    ref = bd.hessian(f, backend="numpy")(x.detach().cpu().numpy())
    close(cp.asnumpy(got), ref)
    xf = x.detach().float()
    assert bd.grad(f)(xf).dtype == np.float32
    assert cupy_exec.from_dlpack(xf).data.ptr == xf.data_ptr()      # no copy


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_tiled_transpose_writes_any_layout(cp, dtype):
    """The staging copy: batch-fastest scratch into C-contiguous and strided leaves,
    ragged in both the batch (not a multiple of 32) and the width."""
    rng = cp.random.default_rng(8)
    for batch, width in ((1, 8), (1000, 8), (1037, 33), (70_001, 70)):
        src = cupy_exec.empty(width, batch, dtype)
        src[...] = rng.standard_normal((batch, width), dtype=dtype)
        dense = cp.full((batch, width), cp.nan, dtype=dtype)
        wide = cp.full((batch, 2 * width), cp.nan, dtype=dtype)
        for dst in (dense, wide[:, ::2]):
            cupy_exec._transpose(src, dst)
            assert bool(cp.all(dst == src))
        assert bool(cp.all(cp.isnan(wide[:, 1::2]))), "wrote between the columns"


def test_staged_leaves_match_the_reference(cp, monkeypatch):
    """A C-contiguous out= and sparse values, with staging on and off."""
    f = CASES[1][1]                                     # Lorenz-96, n = 8
    x = np.random.default_rng(9).uniform(-2, 2, size=(3001, 8))
    ref = bd.jacobian(f, backend="numpy")(x)
    X = cp.asarray(x)
    for threshold in (1, 10**9):
        monkeypatch.setattr(cupy_exec, "STAGE_MIN_WIDTH", threshold)
        J = cp.full((3001, 8, 8), cp.nan)
        bd.jacobian(f)(X, out=J)
        close(J, ref)
        s = bd.jacobian(f, sparse=True)(X)
        close(s.to_dense(), ref)
