"""Sparse results: one pattern shared by every point, and a ``(B, nnz)`` values array.

A sparse Jacobian or Hessian of a batch stores only the structural non-zeros of each
point's matrix. The structure comes from the tape, so it is the same at every point:
one ``Pattern`` (CSR row pointers and column indices) serves the whole batch, and
``values[b]`` holds point ``b``'s entries in pattern order. The matrix view of one
point is ``(prod(out_shape), prod(in_shape))`` for a Jacobian, ``(n, n)`` for the
Hessian of a scalar function of ``n`` inputs, and the stacked Hessians
``(prod(out_shape) * n, n)`` for a vector-valued one.

SciPy does the sparse matrices; this module only holds the batch and converts it
without copying the values. SciPy (and CuPy, for device arrays) are imported only
when a conversion needs them, so the dense path of batchdiff does not depend on them.

>>> import numpy as np
>>> from batchdiff.sparse import Pattern, SparseResult
>>> p = Pattern.from_positions([0, 1, 3], shape=(2, 2))       # [[*, *], [0, *]]
>>> r = SparseResult(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), p, (2, 2))
>>> r
<SparseResult: 2 points of 2x2 matrices, 3 non-zeros each (75.0%), float64>
>>> r.to_dense()[1]
array([[4., 5.],
       [0., 6.]])
"""
from __future__ import annotations

import contextlib
import math
import operator

import numpy as np

from .pattern import Pattern, index_dtype, scipy_sparse


def _is_cupy(a) -> bool:
    # never import cupy to ask: the dense path must not pay for it
    return type(a).__module__.split(".")[0] == "cupy"


def _cupyx_sparse():
    import cupyx.scipy.sparse
    return cupyx.scipy.sparse


class SparseBatch:
    """What a batch of sparse matrices answers from its ``values``, ``pattern`` and
    ``dense_shape``: shared by ``SparseResult`` and the lazy ``DaskSparseResult``."""
    __slots__ = ()

    @property
    def dtype(self):
        """The values' dtype."""
        return self.values.dtype

    @property
    def nnz(self) -> int:
        """The number of stored entries per point."""
        return self.pattern.nnz

    @property
    def shape(self) -> tuple:
        """``(B, *dense_shape)``: the shape of ``to_dense()``."""
        return (len(self),) + self.dense_shape

    @property
    def matrix_shape(self) -> tuple:
        """``(m, n)``: the matrix view of one point, as in ``to_scipy``."""
        return self.pattern.shape

    def __len__(self):
        return self.values.shape[0]


class SparseResult(SparseBatch):
    """A batch of sparse matrices: one ``Pattern`` and a ``(B, nnz)`` values array.

    ``values[b]`` holds point ``b``'s entries in pattern (CSR) order; ``dense_shape`` is
    the per-point shape of the dense result (``out_shape + in_shape`` for a Jacobian,
    ``out_shape + in_shape + in_shape`` for a Hessian), whose row-major flattening is the
    pattern's ``(m, n)`` matrix view. Values may be NumPy or CuPy arrays; conversions
    keep them where they are and share their memory.

    >>> import numpy as np
    >>> p = Pattern.from_positions([0, 2, 3], (2, 2))          # lower bidiagonal
    >>> r = SparseResult(np.array([[1.0, 2.0, 3.0]]), p, (2, 2))
    >>> r.nnz, r.shape, r.matrix_shape, r.dtype, len(r)
    (3, (1, 2, 2), (2, 2), dtype('float64'), 1)
    """
    __slots__ = ("_values", "_pattern", "_dense_shape", "_on_device")

    def __init__(self, values, pattern: Pattern, dense_shape: tuple):
        if not isinstance(pattern, Pattern):
            raise TypeError(f"pattern must be a batchdiff.sparse.Pattern, "
                            f"got {type(pattern).__name__}")
        if not (isinstance(values, np.ndarray) or _is_cupy(values)):
            raise TypeError(f"values must be a NumPy or CuPy array, got {type(values).__name__}")
        if values.ndim != 2 or values.shape[1] != pattern.nnz:
            raise ValueError(f"values must have shape (points, {pattern.nnz}): one row of "
                             f"{pattern.nnz} non-zeros per point; got shape {values.shape}")
        if not values.flags.c_contiguous:
            # rows must be contiguous for the conversions to share memory
            raise ValueError(f"values must be C-contiguous; got strides {values.strides} "
                             "(pass an ascontiguousarray of them)")
        dense_shape = tuple(operator.index(d) for d in dense_shape)
        m, n = pattern.shape
        if math.prod(dense_shape) != m * n:
            raise ValueError(f"dense_shape {dense_shape} has {math.prod(dense_shape)} entries "
                             f"per point, but the pattern's {m}x{n} matrix has {m * n}")
        self._values, self._pattern, self._dense_shape = values, pattern, dense_shape
        self._on_device = None

    @property
    def values(self):
        """The ``(B, nnz)`` values, in pattern order (NumPy or CuPy)."""
        return self._values

    @property
    def pattern(self) -> Pattern:
        """The ``Pattern`` shared by every point."""
        return self._pattern

    @property
    def dense_shape(self) -> tuple:
        """The per-point shape of the dense result."""
        return self._dense_shape

    def __repr__(self):
        B, (m, n) = len(self), self.matrix_shape
        what = f"{B} point{'' if B == 1 else 's'} of {m}x{n} matri{'x' if B == 1 else 'ces'}"
        if self._dense_shape != (m, n):
            what += f" (dense shape {self._dense_shape})"
        nnz = f"{self.nnz} non-zero{'' if self.nnz == 1 else 's'} each"
        if m * n:
            nnz += f" ({_percent(self.nnz / (m * n))})"
        parts = [what, nnz, str(self.dtype)]
        if _is_cupy(self._values):
            parts.append("cupy")
        if self._pattern.upper:
            parts.append("upper triangle")
        return f"<SparseResult: {', '.join(parts)}>"

    def _device_pattern(self):
        """``(indptr, indices, positions)`` on the values' device (CuPy), moved once."""
        if self._on_device is None:
            import cupy
            p = self._pattern
            with self._values.device:
                self._on_device = tuple(cupy.asarray(a) for a in (p.indptr, p.indices,
                                                                  p.positions))
        return self._on_device

    def to_scipy(self, b):
        """Point ``b`` as a ``scipy.sparse.csr_array`` of shape ``matrix_shape``.

        The matrix's data is row ``b`` of ``values`` (no copy: writing one writes the
        other) and its index arrays are the pattern's, read-only; ``.copy()`` it before
        changing its structure in place (``eliminate_zeros``, for one). ``b``
        counts from the end when negative. On CuPy values it is a
        ``cupyx.scipy.sparse.csr_matrix`` on the same device.

        >>> import numpy as np
        >>> p = Pattern.from_positions([0, 2, 3], (2, 2))
        >>> r = SparseResult(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), p, (2, 2))
        >>> A = r.to_scipy(-1)
        >>> A.toarray()
        array([[4., 0.],
               [5., 6.]])
        >>> np.shares_memory(A.data, r.values)
        True
        """
        B = len(self)
        b = operator.index(b)
        if not -B <= b < B:
            raise IndexError(f"point {b} is out of range for a batch of {B} points")
        row = self._values[b]
        if _is_cupy(row):
            indptr, indices, _ = self._device_pattern()
            return _cupyx_sparse().csr_matrix((row, indices, indptr), shape=self.matrix_shape)
        p = self._pattern
        return _csr_array(row, p.indices, p.indptr, p.shape)

    def block_diag(self):
        """The whole batch as one block-diagonal CSR matrix of shape ``(B*m, B*n)``.

        Block ``b`` is point ``b``'s matrix, and the matrix's data *is*
        ``values.reshape(-1)`` (no copy), so one sparse solve handles every point's
        system at once. Index arrays are int32 where they fit. On CuPy values it is a
        ``cupyx.scipy.sparse.csr_matrix`` on the same device.

        >>> import numpy as np
        >>> p = Pattern.from_positions([0, 2, 3], (2, 2))
        >>> r = SparseResult(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), p, (2, 2))
        >>> A = r.block_diag()
        >>> A.toarray()
        array([[1., 0., 0., 0.],
               [2., 3., 0., 0.],
               [0., 0., 4., 0.],
               [0., 0., 5., 6.]])
        >>> np.shares_memory(A.data, r.values)
        True
        """
        B, (m, n), nnz = len(self), self.matrix_shape, self.nnz
        idx = index_dtype(B * m, B * n, B * nnz)
        cupy_values = _is_cupy(self._values)
        if cupy_values:
            if idx is np.int64:
                raise ValueError(f"a block-diagonal matrix of {B} points of {m}x{n} with "
                                 f"{nnz} non-zeros each needs 64-bit indices, which "
                                 "cupyx.scipy.sparse does not support: convert fewer points")
            import cupy as xp
            indptr, indices, _ = self._device_pattern()
        else:
            xp, indptr, indices = np, self._pattern.indptr, self._pattern.indices
        with _device(self._values):
            first = xp.arange(B, dtype=idx)[:, None]
            # point b's entries are the pattern's, shifted by b*n columns and b*nnz entries
            big_indices = (first * n + indices.astype(idx, copy=False)).reshape(-1)
            big_indptr = xp.empty(B * m + 1, dtype=idx)
            big_indptr[:-1] = (first * nnz + indptr[:-1].astype(idx, copy=False)).reshape(-1)
            big_indptr[-1] = B * nnz
        data = self._values.reshape(-1)
        if cupy_values:
            return _cupyx_sparse().csr_matrix((data, big_indices, big_indptr),
                                              shape=(B * m, B * n))
        return _csr_array(data, big_indices, big_indptr, (B * m, B * n))

    def to_dense(self):
        """The dense result, ``(B, *dense_shape)``, as a NumPy or CuPy array like ``values``.

        For an ``upper`` pattern it holds exactly what is stored, the upper triangle of
        each block, with zeros below the diagonal (as ``to_scipy`` does).

        >>> import numpy as np
        >>> p = Pattern.from_positions([0, 1, 3], (2, 2), upper=True)
        >>> SparseResult(np.array([[1.0, 2.0, 3.0]]), p, (2, 2)).to_dense()
        array([[[1., 2.],
                [0., 3.]]])
        """
        B, (m, n) = len(self), self.matrix_shape
        if _is_cupy(self._values):
            import cupy as xp
            positions = self._device_pattern()[2]
        else:
            xp, positions = np, self._pattern.positions
        with _device(self._values):
            dense = xp.zeros((B, m * n), dtype=self.dtype)
            dense[:, positions] = self._values
        return dense.reshape(self.shape)


def _csr_array(data, indices, indptr, shape):
    """A ``scipy.sparse.csr_array`` whose data is ``data`` itself.

    SciPy copies a data array that is a view of one more than twice its size (its
    ``prune``), as a row of the values is; so the matrix is built on an uninitialised
    stand-in of the same length and dtype, then handed the real data.
    """
    matrix = scipy_sparse().csr_array((np.empty_like(data), indices, indptr), shape=shape)
    matrix.data = data
    return matrix


def _device(values):
    """The CuPy device of ``values`` as a context manager; a no-op for NumPy."""
    return values.device if _is_cupy(values) else contextlib.nullcontext()


def _percent(fraction) -> str:
    pct = 100 * fraction
    return f"{pct:.1f}%" if pct == 0 or pct >= 0.1 else f"{pct:.1g}%"
