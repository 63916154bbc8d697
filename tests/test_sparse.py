"""Sparse Jacobians and Hessians: the batched container, and the transforms that return it.

The container (``batchdiff.sparse``) is tested on hand-made patterns against SciPy built
from dense arrays. Through the API, the expected pattern is derived independently: SymPy
differentiates the same per-point function (run on an object array of symbols) and the
entries that are not identically zero form the pattern; the expected values are the
dense result of the NumPy reference interpreter. batchdiff's own sparse output is never
the expected value.
"""
import functools
import subprocess
import sys
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import sympy

import batchdiff as bd
from batchdiff.kernels import cupy_exec
from batchdiff.problems import lorenz96, rosenbrock
from batchdiff.sparse import Pattern, SparseResult


def random_mask(rng, shape, density=0.3):
    return rng.random(shape) < density


def batch_of(rng, mask, B, dtype=np.float64):
    """B dense matrices that are zero outside ``mask`` (entries in [1, 2), never zero)."""
    return (rng.uniform(1.0, 2.0, (B,) + mask.shape) * mask).astype(dtype)


def sparse_of(dense, mask, dense_shape=None):
    """A SparseResult holding ``dense`` (B, m, n) on the structure ``mask`` (m, n)."""
    pattern = Pattern.from_positions(np.flatnonzero(mask), mask.shape)
    values = np.ascontiguousarray(dense.reshape(len(dense), -1)[:, pattern.positions])
    return SparseResult(values, pattern, dense_shape or mask.shape)


# -- Pattern -----------------------------------------------------------------------------------


def test_pattern_from_positions_is_scipys_csr():
    rng = np.random.default_rng(0)
    mask = random_mask(rng, (7, 5))
    mask[3] = False                                      # an empty row
    p = Pattern.from_positions(np.flatnonzero(mask), mask.shape)
    ref = scipy.sparse.csr_array(mask)
    assert p.shape == (7, 5) and p.nnz == ref.nnz == mask.sum() and not p.upper
    np.testing.assert_array_equal(p.indptr, ref.indptr)
    np.testing.assert_array_equal(p.indices, ref.indices)
    assert p.indptr.dtype == p.indices.dtype == np.int32
    np.testing.assert_array_equal(p.rows, np.nonzero(mask)[0])
    np.testing.assert_array_equal(p.positions, np.flatnonzero(mask))
    np.testing.assert_array_equal(p.to_scipy().toarray(), mask)


def test_pattern_is_immutable_and_hashable_by_content():
    positions = np.array([0, 4, 5, 8])
    p = Pattern.from_positions(positions, (3, 3))
    q = Pattern(p.indptr.astype(np.int64), p.indices.astype(np.int64), (3, 3))
    assert p == q and hash(p) == hash(q) and {p: 1}[q] == 1
    assert p != Pattern.from_positions(positions, (3, 3), upper=True)
    assert p != Pattern.from_positions(positions[:3], (3, 3))
    assert p != Pattern.from_positions(positions, (4, 3))
    positions[0] = 1                                     # the pattern holds its own copy
    assert p.positions[0] == 0
    for a in (p.indptr, p.indices, p.rows, p.positions):
        assert not a.flags.writeable
    with pytest.raises(FrozenInstanceError):
        p.shape = (9, 1)
    assert repr(p) == "Pattern(shape=(3, 3), nnz=4)"


def test_pattern_index_width_grows_with_its_bounds():
    assert Pattern.from_positions([0], (1, 2 ** 31 - 1)).indices.dtype == np.int32
    wide = Pattern.from_positions([2 ** 31 + 5], (1, 2 ** 32))
    assert wide.indices.dtype == wide.indptr.dtype == np.int64
    assert wide.indices[0] == 2 ** 31 + 5 and wide.positions[0] == 2 ** 31 + 5


@pytest.mark.parametrize("positions, shape, match", [
    ([3, 1], (2, 2), "strictly increasing"),
    ([1, 1], (2, 2), "strictly increasing"),
    ([0, 4], (2, 2), "in \\[0, 4\\)"),
    ([-1], (2, 2), "in \\[0, 4\\)"),
    ([[0, 1]], (2, 2), "1-D integer"),
    ([0.0, 1.0], (2, 2), "1-D integer"),
    ([0], (2, 2, 1), "rows, columns"),
])
def test_pattern_from_bad_positions(positions, shape, match):
    with pytest.raises(ValueError, match=match):
        Pattern.from_positions(positions, shape)


@pytest.mark.parametrize("indptr, indices, match", [
    ([0, 1], [0], "indptr must rise"),                 # too short for 2 rows
    ([0, 2, 1], [0], "indptr must rise"),
    ([1, 1, 1], [0], "indptr must rise"),
    ([0, 1, 2], [0, 3], "indices must lie in"),
    ([0, 2, 2], [1, 0], "strictly increasing within each row"),
    ([0, 2, 2], [1, 1], "strictly increasing within each row"),
])
def test_pattern_from_bad_csr(indptr, indices, match):
    with pytest.raises(ValueError, match=match):
        Pattern(np.array(indptr), np.array(indices), (2, 3))


def test_upper_pattern_of_stacked_blocks():
    # two 3x3 blocks (a vector-valued Hessian with 2 outputs), upper triangles only
    mask = np.zeros((2, 3, 3), dtype=bool)
    mask[0] = [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    mask[1] = [[0, 0, 1], [0, 1, 0], [0, 0, 0]]
    p = Pattern.from_positions(np.flatnonzero(mask), (6, 3), upper=True)
    assert p.upper and p.nnz == 7
    lower = Pattern.from_positions(np.flatnonzero(mask), (6, 3))
    assert lower.indptr.tolist() == p.indptr.tolist() and lower != p
    with pytest.raises(ValueError, match="below a block's diagonal"):
        Pattern.from_positions([3], (6, 3), upper=True)  # row 1, column 0
    with pytest.raises(ValueError, match="square blocks"):
        Pattern.from_positions([0], (5, 3), upper=True)


# -- SparseResult ------------------------------------------------------------------------------


@pytest.fixture
def batch():
    """(dense (B, 6, 4), mask (6, 4), SparseResult) for B = 5 random sparse matrices."""
    rng = np.random.default_rng(1)
    mask = random_mask(rng, (6, 4), 0.4)
    dense = batch_of(rng, mask, 5)
    return dense, mask, sparse_of(dense, mask)


def test_result_attributes(batch):
    dense, mask, r = batch
    assert len(r) == 5 and r.nnz == mask.sum() and r.dtype == np.float64
    assert r.shape == (5, 6, 4) and r.dense_shape == r.matrix_shape == (6, 4)
    assert r.values.shape == (5, r.nnz) and r.values.flags.c_contiguous


def test_to_scipy_is_each_point_sharing_the_values(batch):
    dense, mask, r = batch
    for b in range(len(r)):
        A = r.to_scipy(b)
        assert isinstance(A, scipy.sparse.csr_array) and A.shape == (6, 4)
        ref = scipy.sparse.csr_array(dense[b])
        np.testing.assert_array_equal(A.indptr, ref.indptr)
        np.testing.assert_array_equal(A.indices, ref.indices)
        np.testing.assert_array_equal(A.data, ref.data)
        assert np.shares_memory(A.data, r.values[b])
    np.testing.assert_array_equal(r.to_scipy(-1).toarray(), dense[-1])
    r.to_scipy(2).data[:] = 7.0                          # a view: writes reach the values
    assert np.all(r.values[2] == 7.0)
    for b in (5, -6):
        with pytest.raises(IndexError, match="out of range for a batch of 5"):
            r.to_scipy(b)


def test_block_diag_is_scipys_sharing_the_values(batch):
    dense, mask, r = batch
    A = r.block_diag()
    ref = scipy.sparse.block_diag([scipy.sparse.csr_array(d) for d in dense], format="csr")
    assert isinstance(A, scipy.sparse.csr_array) and A.shape == (30, 20)
    np.testing.assert_array_equal(A.toarray(), ref.toarray())
    np.testing.assert_array_equal(A.indptr, ref.indptr)
    np.testing.assert_array_equal(A.indices, ref.indices)
    assert A.indptr.dtype == A.indices.dtype == np.int32
    assert np.shares_memory(A.data, r.values) and A.data.shape == (r.values.size,)
    assert A.has_canonical_format


def test_block_diag_indices_widen_past_int32():
    p = Pattern.from_positions([5, 2 ** 30 - 1], (1, 2 ** 30))     # int32 for one point
    r = SparseResult(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]), p, (2 ** 30,))
    A = r.block_diag()
    assert p.indices.dtype == np.int32
    assert A.shape == (4, 2 ** 32) and A.indices.dtype == A.indptr.dtype == np.int64
    assert A.indices.tolist() == [b * 2 ** 30 + c for b in range(4) for c in (5, 2 ** 30 - 1)]
    assert A.indptr.tolist() == [0, 2, 4, 6, 8] and np.shares_memory(A.data, r.values)


def test_to_dense_round_trips_with_the_dense_shape():
    rng = np.random.default_rng(2)
    mask = random_mask(rng, (2, 3, 4))                   # out (2,) x in (3, 4): 2x12 matrices
    dense = batch_of(rng, mask, 3)
    r = sparse_of(dense.reshape(3, 2, 12), mask.reshape(2, 12), dense_shape=(2, 3, 4))
    assert r.shape == (3, 2, 3, 4) and r.matrix_shape == (2, 12)
    out = r.to_dense()
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_array_equal(out, dense)


def test_float32_is_kept(batch):
    dense, mask, _ = batch
    r = sparse_of(dense.astype(np.float32), mask)
    assert r.dtype == np.float32
    assert r.to_dense().dtype == r.to_scipy(0).dtype == r.block_diag().dtype == np.float32
    np.testing.assert_array_equal(r.to_dense(), dense.astype(np.float32))
    assert np.shares_memory(r.block_diag().data, r.values)


def test_upper_results_hold_only_the_stored_triangle():
    h = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 4.0], [0.0, 4.0, 5.0]])
    p = Pattern.from_positions(np.flatnonzero(np.triu(h)), (3, 3), upper=True)
    r = SparseResult(np.triu(h)[np.triu(h) != 0][None], p, (3, 3))
    np.testing.assert_array_equal(r.to_dense()[0], np.triu(h))
    np.testing.assert_array_equal(r.to_scipy(0).toarray(), np.triu(h))
    assert repr(r).endswith("float64, upper triangle>")


def test_empty_batch():
    p = Pattern.from_positions([0, 3], (2, 2))
    r = SparseResult(np.zeros((0, 2)), p, (2, 2))
    assert len(r) == 0 and r.shape == (0, 2, 2)
    assert r.to_dense().shape == (0, 2, 2)
    A = r.block_diag()
    assert A.shape == (0, 0) and A.nnz == 0
    with pytest.raises(IndexError):
        r.to_scipy(0)
    assert repr(r) == "<SparseResult: 0 points of 2x2 matrices, 2 non-zeros each (50.0%), float64>"


def test_no_nonzeros():
    p = Pattern.from_positions([], (3, 2))
    r = SparseResult(np.zeros((4, 0), dtype=np.float32), p, (3, 2))
    assert r.nnz == 0 and len(r) == 4
    np.testing.assert_array_equal(r.to_dense(), np.zeros((4, 3, 2), dtype=np.float32))
    assert r.to_scipy(3).nnz == 0 and r.to_scipy(3).shape == (3, 2)
    A = r.block_diag()
    assert A.shape == (12, 8) and A.nnz == 0 and A.dtype == np.float32
    assert repr(r) == "<SparseResult: 4 points of 3x2 matrices, 0 non-zeros each (0.0%), float32>"


def test_bad_values_and_shapes():
    p = Pattern.from_positions([0, 3], (2, 2))
    with pytest.raises(ValueError, match=r"shape \(points, 2\).*got shape \(2,\)"):
        SparseResult(np.zeros(2), p, (2, 2))
    with pytest.raises(ValueError, match=r"shape \(points, 2\).*got shape \(5, 3\)"):
        SparseResult(np.zeros((5, 3)), p, (2, 2))
    with pytest.raises(ValueError, match="C-contiguous"):
        SparseResult(np.zeros((2, 5))[:, :2], p, (2, 2))
    with pytest.raises(ValueError, match="C-contiguous"):
        SparseResult(np.zeros((5, 2), order="F"), p, (2, 2))
    with pytest.raises(ValueError, match=r"dense_shape \(2, 3\) has 6 entries"):
        SparseResult(np.zeros((5, 2)), p, (2, 3))
    with pytest.raises(TypeError, match="NumPy or CuPy array, got list"):
        SparseResult([[1.0, 2.0]], p, (2, 2))
    with pytest.raises(TypeError, match="Pattern"):
        SparseResult(np.zeros((5, 2)), p.to_scipy(), (2, 2))


def test_repr_is_readable():
    n = 100
    tridiagonal = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1
    p = Pattern.from_positions(np.flatnonzero(tridiagonal), (n, n))
    r = SparseResult(np.zeros((10000, p.nnz)), p, (n, n))
    assert repr(r) == ("<SparseResult: 10000 points of 100x100 matrices, "
                       "298 non-zeros each (3.0%), float64>")
    upper = Pattern.from_positions(np.flatnonzero(np.triu(tridiagonal)), (n, n), upper=True)
    r = SparseResult(np.zeros((1, upper.nnz), np.float32), upper, (n, n))
    assert repr(r) == ("<SparseResult: 1 point of 100x100 matrix, 199 non-zeros each (2.0%), "
                       "float32, upper triangle>")
    stacked = SparseResult(np.zeros((3, 1)), Pattern.from_positions([0], (4, 2)), (2, 2, 2))
    assert repr(stacked) == ("<SparseResult: 3 points of 4x2 matrices (dense shape (2, 2, 2)), "
                             "1 non-zero each (12.5%), float64>")


def test_missing_scipy_says_how_to_install(batch, monkeypatch):
    _, _, r = batch
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)
    for convert in (lambda: r.to_scipy(0), r.block_diag, r.pattern.to_scipy):
        with pytest.raises(ImportError, match="pip install scipy"):
            convert()
    assert r.to_dense().shape == (5, 6, 4)               # the dense view needs no SciPy


def test_the_container_imports_neither_scipy_nor_cupy():
    code = ("import sys, numpy as np\n"
            "from batchdiff.sparse import Pattern, SparseResult\n"
            "r = SparseResult(np.ones((2, 2)), Pattern.from_positions([0, 3], (2, 2)), (2, 2))\n"
            "r.to_dense(), repr(r)\n"
            "print(sorted(m for m in ('scipy', 'cupy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not cupy_exec.available(), reason="needs CuPy and a CUDA device")
def test_cupy_values_stay_on_the_device(batch):
    import cupy
    import cupyx.scipy.sparse
    dense, mask, host = batch
    r = SparseResult(cupy.asarray(host.values), host.pattern, host.dense_shape)
    assert repr(r).endswith("float64, cupy>")
    out = r.to_dense()
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(out), dense)
    A = r.to_scipy(1)
    assert isinstance(A, cupyx.scipy.sparse.csr_matrix)
    assert A.data.data.ptr == r.values[1].data.ptr
    np.testing.assert_array_equal(cupy.asnumpy(A.toarray()), dense[1])
    D = r.block_diag()
    assert isinstance(D, cupyx.scipy.sparse.csr_matrix) and D.data.data.ptr == r.values.data.ptr
    np.testing.assert_array_equal(cupy.asnumpy(D.toarray()), host.block_diag().toarray())


# -- through the transforms --------------------------------------------------------------------


def vector_valued(x, xp=np):
    """Four outputs with different Hessian patterns. ``xp=sympy`` for the oracle."""
    return np.stack([x[0] * x[1], xp.sin(x[2]), x[0] ** 2 * x[3], xp.exp(x[1]) * x[2]])


def two_args(x, y, xp=np):
    return np.stack([x[0] * y[1], x[1] + y[0] ** 2, xp.sin(x[2]) * y[2], x[0] + x[2]])


# name: (kind, f, argument shapes, argnums, hessian triangle or None)
API_CASES = {
    "lorenz96_jacobian": ("jacobian", lorenz96, [(8,)], 0, None),
    "rosenbrock_hessian": ("hessian", rosenbrock, [(6,)], 0, None),
    "rosenbrock_hessian_upper": ("hessian", rosenbrock, [(6,)], 0, "upper"),
    "vector_hessian": ("hessian", vector_valued, [(4,)], 0, None),
    "vector_hessian_upper": ("hessian", vector_valued, [(4,)], 0, "upper"),
    "two_args_jacobian": ("jacobian", two_args, [(3,), (3,)], (0, 1), None),
}
BACKENDS = [("numpy", "auto"), ("numba", "replay"), ("numba", "compiled")]
DTYPES = [np.float64, np.float32]
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-4)}


@functools.cache
def transform(kind, f, argnums=0, **options):
    """One transform per configuration: Numba compiles each new tape once."""
    return getattr(bd, kind)(f, argnums, **options)


def sparse_transform(name, backend, method):
    kind, f, _, argnums, triangle = API_CASES[name]
    options = dict(sparse=True, backend=backend, method=method)
    if triangle:
        options["triangle"] = triangle
    return transform(kind, f, argnums, **options)


def dense_reference(name, args):
    kind, f, _, argnums, _ = API_CASES[name]
    return transform(kind, f, argnums, backend="numpy")(*args)


def case_points(name, B, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2.0, 2.0, (B,) + s).astype(dtype) for s in API_CASES[name][2]]


@functools.cache
def sympy_positions(name):
    """Per differentiated argument: the flat positions of the structural non-zeros.

    SymPy differentiates the same function run on arrays of symbols; an entry is in
    the pattern when its derivative is not identically zero.
    """
    kind, f, shapes, argnums, triangle = API_CASES[name]
    symbols = [np.array(sympy.symbols(f"a{k}_0:{np.prod(s, dtype=int)}"), dtype=object)
               for k, s in enumerate(shapes)]
    args = [s.reshape(shape) for s, shape in zip(symbols, shapes)]
    extra = {"xp": sympy} if f in (vector_valued, two_args) else {}
    outputs = list(np.asarray(f(*args, **extra), dtype=object).ravel())
    result = []
    for k in (argnums if isinstance(argnums, tuple) else (argnums,)):
        wrt = list(symbols[k])
        if kind == "jacobian":
            blocks = [[[sympy.diff(y, v) for v in wrt]] for y in outputs]
        else:
            blocks = [sympy.hessian(y, wrt).tolist() for y in outputs]
        entries = np.array([sympy.simplify(e) != 0 for b in blocks for row in b for e in row])
        if triangle:
            n = len(wrt)
            i, j = np.indices((n, n))
            entries &= np.tile((j >= i).ravel(), len(outputs))
        result.append(np.flatnonzero(entries))
    return tuple(result)


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend, method", BACKENDS, ids=lambda x: x)
@pytest.mark.parametrize("name", API_CASES)
def test_sparse_result_is_the_dense_result_on_the_sympy_pattern(name, backend, method, dtype):
    kind, f, shapes, argnums, triangle = API_CASES[name]
    args = case_points(name, 7, dtype)
    results = sparse_transform(name, backend, method)(*args)
    dense = dense_reference(name, args)
    assert isinstance(results, tuple) == isinstance(argnums, tuple)
    results, dense = as_tuple(results), as_tuple(dense)
    for r, d, positions in zip(results, dense, sympy_positions(name)):
        assert isinstance(r, SparseResult)
        assert r.shape == d.shape and len(r) == 7 and r.dtype == dtype
        assert r.values.shape == (7, r.nnz) and r.values.flags.c_contiguous
        assert isinstance(r.values, np.ndarray)
        expected = Pattern.from_positions(positions, r.matrix_shape, upper=bool(triangle))
        assert r.pattern == expected, (r.pattern.positions, positions)
        assert np.prod(r.matrix_shape) == np.prod(d.shape[1:])
        want = np.triu(d) if triangle else d
        np.testing.assert_allclose(r.to_dense(), want, **TOLERANCE[dtype])


def test_matrix_views():
    """(out, in) for a Jacobian, (n, n) for a scalar Hessian, stacked Hessians otherwise."""
    for name, matrix, dense in [("lorenz96_jacobian", (8, 8), (8, 8)),
                                ("rosenbrock_hessian", (6, 6), (6, 6)),
                                ("vector_hessian", (16, 4), (4, 4, 4))]:
        r = sparse_transform(name, "numpy", "auto")(*case_points(name, 2, np.float64))
        assert r.matrix_shape == matrix and r.dense_shape == dense and r.pattern.shape == matrix
    rx, ry = sparse_transform("two_args_jacobian", "numpy", "auto")(
        *case_points("two_args_jacobian", 2, np.float64))
    assert rx.matrix_shape == ry.matrix_shape == (4, 3) and rx.pattern != ry.pattern


def test_lorenz96_has_four_nonzeros_per_row_even_where_they_vanish():
    g = sparse_transform("lorenz96_jacobian", "numba", "replay")
    r = g(np.zeros((3, 8)))
    assert r.nnz == 4 * 8 == len(sympy_positions("lorenz96_jacobian")[0])
    # at x = 0 only the diagonal -1 is numerically non-zero; the pattern keeps all 32
    assert np.count_nonzero(r.values) == 3 * 8 and np.all(r.values[r.values != 0] == -1.0)
    assert r.pattern == g(*case_points("lorenz96_jacobian", 3, np.float64)).pattern
    assert r.to_scipy(0).nnz == 32


def test_one_pattern_object_per_transform():
    g = sparse_transform("rosenbrock_hessian", "numba", "replay")
    a = g(*case_points("rosenbrock_hessian", 4, np.float64, seed=1))
    b = g(*case_points("rosenbrock_hessian", 9, np.float64, seed=2))
    assert a.pattern is b.pattern


def test_upper_triangle_keeps_j_at_least_i():
    r = sparse_transform("vector_hessian_upper", "numba", "replay")(
        *case_points("vector_hessian_upper", 3, np.float64))
    n = r.matrix_shape[1]
    assert r.pattern.upper and np.all(r.pattern.indices >= r.pattern.rows % n)
    full = sparse_transform("vector_hessian", "numba", "replay")(
        *case_points("vector_hessian", 3, np.float64))
    assert full.nnz > r.nnz and not full.pattern.upper


@pytest.mark.parametrize("backend, method", BACKENDS, ids=lambda x: x)
def test_out_reuses_the_values_memory(backend, method):
    name = "lorenz96_jacobian"
    g = sparse_transform(name, backend, method)
    first = g(*case_points(name, 5, np.float64, seed=1))
    buffer = first.values
    args = case_points(name, 5, np.float64, seed=2)
    again = g(*args, out=first)
    assert np.shares_memory(again.values, buffer) and again.values.ctypes.data == buffer.ctypes.data
    close = TOLERANCE[np.float64]
    np.testing.assert_allclose(again.to_dense(), dense_reference(name, args), **close)
    args = case_points(name, 5, np.float64, seed=3)
    third = g(*args, out=buffer)
    assert isinstance(third, SparseResult) and third.values.ctypes.data == buffer.ctypes.data
    np.testing.assert_allclose(third.to_dense(), dense_reference(name, args), **close)


def test_out_with_several_argnums():
    name = "two_args_jacobian"
    g = sparse_transform(name, "numba", "replay")
    first = g(*case_points(name, 4, np.float32, seed=1))
    args = case_points(name, 4, np.float32, seed=2)
    again = g(*args, out=first)
    for r, old, d in zip(again, first, dense_reference(name, args)):
        assert r.values.ctypes.data == old.values.ctypes.data
        np.testing.assert_allclose(r.to_dense(), d, **TOLERANCE[np.float32])


# -- a Newton step of implicit Euler on a batch of Lorenz-96 systems ---------------------------


def lorenz96_batch(X):
    """Lorenz-96 on every row of X (plain NumPy)."""
    return (np.roll(X, -1, axis=-1) - np.roll(X, 2, axis=-1)) * np.roll(X, 1, axis=-1) - X + 8.0


def lorenz96_jacobian_by_hand(X):
    """The analytic Jacobian of every row and its structure (4 entries a row, cyclic)."""
    B, n = X.shape
    i = np.arange(n)
    J = np.zeros((B, n, n))
    J[:, i, (i + 1) % n] = X[:, i - 1]
    J[:, i, i - 2] = -X[:, i - 1]
    J[:, i, i - 1] = X[:, (i + 1) % n] - X[:, i - 2]
    J[:, i, i] = -1.0
    mask = np.zeros((n, n), dtype=bool)
    for k in (1, -2, -1, 0):
        mask[i, (i + k) % n] = True
    return J, mask


def implicit_euler_newton_step(J_sparse, X, h):
    """x1 = x + dx with (I - h J(x)) dx = h F(x), for every point in one sparse solve."""
    B, n = X.shape
    A = scipy.sparse.eye_array(B * n, format="csr") - h * J_sparse.block_diag()
    dx = scipy.sparse.linalg.spsolve(A.tocsc(), h * lorenz96_batch(X).reshape(-1))
    return X + dx.reshape(B, n)


def dense_newton_step(J, X, h):
    n = X.shape[1]
    dx = np.linalg.solve(np.eye(n) - h * J, h * lorenz96_batch(X)[..., None])[..., 0]
    return X + dx


def test_newton_step_with_block_diag_on_a_hand_made_jacobian():
    X = np.random.default_rng(3).uniform(-2.0, 2.0, (6, 10))
    J, mask = lorenz96_jacobian_by_hand(X)
    x1 = implicit_euler_newton_step(sparse_of(J, mask), X, h=0.05)
    np.testing.assert_allclose(x1, dense_newton_step(J, X, h=0.05), rtol=1e-12, atol=1e-12)


def test_newton_step_with_block_diag_through_the_api():
    X = np.random.default_rng(4).uniform(-2.0, 2.0, (6, 8))
    J = transform("jacobian", lorenz96, 0, sparse=True)(X)
    x1 = implicit_euler_newton_step(J, X, h=0.05)
    J_dense, _ = lorenz96_jacobian_by_hand(X)
    np.testing.assert_allclose(x1, dense_newton_step(J_dense, X, h=0.05), rtol=1e-12, atol=1e-12)
