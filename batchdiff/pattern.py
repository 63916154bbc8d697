"""The sparsity pattern of a batch's matrices: CSR row pointers and column indices.

One ``Pattern`` serves every point of a sparse result (``batchdiff.sparse``): the
structure comes from the tape, so it is the same at every point.

>>> Pattern.from_positions([0, 1, 3], shape=(2, 2))       # [[*, *], [0, *]]
Pattern(shape=(2, 2), nnz=3)
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import numpy as np

INT32_MAX = np.iinfo(np.int32).max


def index_dtype(*bounds):
    """int32 when every bound fits (SciPy's and cuSPARSE's preferred width), else int64."""
    return np.int32 if max(bounds, default=0) <= INT32_MAX else np.int64


def _read_only(a):
    a.flags.writeable = False
    return a


def _matrix_shape(shape) -> tuple:
    shape = tuple(operator.index(s) for s in shape)
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"a pattern's shape is (rows, columns), got {shape!r}")
    return shape


def scipy_sparse():
    try:
        import scipy.sparse
    except ImportError:
        raise ImportError("sparse results convert to SciPy matrices, and SciPy is not "
                          "installed: pip install scipy") from None
    return scipy.sparse


@dataclass(frozen=True, eq=False)
class Pattern:
    """The structural non-zeros of every point's matrix, in CSR form.

    ``indptr`` (length ``m + 1``) and ``indices`` (column of each entry, sorted within
    each row) are read-only int32 arrays, int64 where a bound does not fit in int32.
    With ``upper``, only the upper triangle ``j >= i`` of each square ``n x n`` block is
    stored (a Hessian for a sparse Cholesky solver). Patterns compare and hash by content.

    >>> import numpy as np
    >>> p = Pattern(np.array([0, 2, 3]), np.array([0, 1, 1]), (2, 2), upper=True)
    >>> p
    Pattern(shape=(2, 2), nnz=3, upper=True)
    >>> p.indices
    array([0, 1, 1], dtype=int32)
    >>> p == Pattern.from_positions([0, 1, 3], (2, 2), upper=True)
    True
    """
    indptr: np.ndarray
    indices: np.ndarray
    shape: tuple
    upper: bool = False

    def __post_init__(self):
        shape = _matrix_shape(self.shape)
        m, n = shape
        indptr, indices = np.asarray(self.indptr), np.asarray(self.indices)
        nnz = indices.size
        for name, a in (("indptr", indptr), ("indices", indices)):
            if a.ndim != 1 or a.size and a.dtype.kind not in "iu":
                raise ValueError(f"Pattern.{name} must be a 1-D integer array, "
                                 f"got {a.dtype} with shape {a.shape}")
        if indptr.size != m + 1 or indptr[0] != 0 or indptr[-1] != nnz or np.any(
                np.diff(indptr) < 0):
            raise ValueError(f"Pattern.indptr must rise from 0 to nnz = {nnz} in {m + 1} "
                             f"entries for {m} rows, got {indptr!r}")
        if nnz and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"Pattern.indices must lie in [0, {n}) for {n} columns")
        idx = index_dtype(m, n, nnz)
        # private copies: the pattern is shared by every result and must not change
        object.__setattr__(self, "indptr", _read_only(np.array(indptr, dtype=idx)))
        object.__setattr__(self, "indices", _read_only(np.array(indices, dtype=idx)))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "upper", bool(self.upper))
        if np.any(np.diff(self.positions) <= 0):
            raise ValueError("Pattern.indices must be strictly increasing within each row")
        if self.upper:
            square_blocks = m % n == 0 if n else m == 0
            if not square_blocks:
                raise ValueError(f"an upper-triangle pattern is a stack of square blocks, "
                                 f"but shape {shape} has {m} rows for {n} columns")
            if np.any(self.indices < self.rows % max(n, 1)):
                raise ValueError("an upper-triangle pattern has an entry below a block's diagonal")

    @classmethod
    def from_positions(cls, positions, shape, upper=False) -> "Pattern":
        """The pattern of the entries at ``positions``: flat row-major indices into ``shape``.

        ``positions`` must be strictly increasing.

        >>> p = Pattern.from_positions([1, 2, 4], (2, 3))      # [[0, *, *], [0, *, 0]]
        >>> p.indptr, p.indices
        (array([0, 2, 3], dtype=int32), array([1, 2, 1], dtype=int32))
        """
        m, n = _matrix_shape(shape)
        positions = np.asarray(positions)
        if positions.size == 0:
            positions = positions.astype(np.int64)
        if positions.ndim != 1 or positions.dtype.kind not in "iu":
            raise ValueError(f"positions must be a 1-D integer array, got {positions.dtype} "
                             f"with shape {positions.shape}")
        if positions.size and (positions[0] < 0 or positions[-1] >= m * n
                               or np.any(np.diff(positions) <= 0)):
            raise ValueError(f"positions must be strictly increasing flat indices in "
                             f"[0, {m * n}) for shape {(m, n)}")
        rows, cols = np.divmod(positions.astype(np.int64), max(n, 1))
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
        return cls(indptr, cols, (m, n), upper)

    @property
    def nnz(self) -> int:
        """The number of stored entries of one point's matrix."""
        return int(self.indices.size)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """The row of each entry (``indptr`` expanded), read-only.

        >>> Pattern.from_positions([1, 2, 4], (2, 3)).rows
        array([0, 0, 1], dtype=int32)
        """
        m = self.shape[0]
        return _read_only(np.repeat(np.arange(m, dtype=self.indices.dtype), np.diff(self.indptr)))

    @functools.cached_property
    def positions(self) -> np.ndarray:
        """The flat row-major index of each entry in the ``(m, n)`` matrix (int64), read-only.

        >>> Pattern.from_positions([1, 2, 4], (2, 3)).positions
        array([1, 2, 4])
        """
        flat = self.rows.astype(np.int64) * self.shape[1] + self.indices
        return _read_only(flat)

    @functools.cached_property
    def _key(self):
        return (self.shape, self.upper, self.indptr.tobytes(), self.indices.tobytes())

    def __eq__(self, other):
        if not isinstance(other, Pattern):
            return NotImplemented
        return self is other or self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        upper = ", upper=True" if self.upper else ""
        return f"Pattern(shape={self.shape}, nnz={self.nnz}{upper})"

    def to_scipy(self):
        """The pattern as a ``scipy.sparse.csr_array`` of ``True`` (for spy plots, reordering).

        >>> Pattern.from_positions([1, 2, 4], (2, 3)).to_scipy().toarray()
        array([[False,  True,  True],
               [False,  True, False]])
        """
        ones = np.ones(self.nnz, dtype=bool)
        return scipy_sparse().csr_array((ones, self.indices, self.indptr), shape=self.shape)
