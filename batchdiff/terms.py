"""Least-squares problems made of many small terms, each reading a few parameters.

Bundle adjustment is the model: each observation's residual reads one camera's and one
point's parameters. ``Terms(term, index, n_params)`` holds the residual of one term,
``term(p, *data)`` with ``p`` the term's own parameters (``params[index[t]]``), and for
every term ``t`` the global index of each of them. batchdiff evaluates the term's value
and Jacobian at every term in one kernel (only the structural non-zeros of the term's
Jacobian) and scatters them into the problem's sparse Jacobian, whose CSR pattern is
computed on the first call and reused: later calls only rewrite its values.

>>> import numpy as np, batchdiff as bd
>>> # fit y ~ a_g * x + b_g per group g; terms: (group, x, y)
>>> groups, x = np.array([0, 0, 1, 1, 1]), np.array([0.0, 1.0, 0.0, 1.0, 2.0])
>>> y = np.array([1.0, 3.0, -1.0, 0.0, 1.0])
>>> index = np.stack([2 * groups, 2 * groups + 1], axis=1)     # (a_g, b_g) of each term
>>> line = Terms(lambda p, x, y: p[0] * x + p[1] - y, index, n_params=4, data=(x, y))
>>> r, J = line.residuals_and_jacobian(np.zeros(4))
>>> r
array([-1., -3.,  1.,  0., -1.])
>>> J.toarray()
array([[0., 1., 0., 0.],
       [1., 1., 0., 0.],
       [0., 0., 0., 1.],
       [0., 0., 1., 1.],
       [0., 0., 2., 1.]])
>>> import scipy.optimize
>>> fit = scipy.optimize.least_squares(line.residuals, np.zeros(4), jac=line.jacobian)
>>> np.round(fit.x, 10)                                      # (a_0, b_0, a_1, b_1)
array([ 2.,  1.,  1., -1.])
"""
from __future__ import annotations

import numpy as np

from .api import value_and_jacobian
from .pattern import scipy_sparse


class Terms:
    """A least-squares residual ``r(params)``: the concatenated residuals of T terms.

    ``term(p, *data)``: one term's residuals (a scalar or an array of m values) from its
    k parameters ``p`` (shape ``(k,)``) and its data; ``index``: ``(T, k)`` integers, the
    global parameter of each local one; ``data``: arrays with one entry per term along
    their first axis (the observations). ``backend``, ``method``: as for every transform.

    The residual vector has ``T * m`` entries, term by term; the Jacobian is a
    ``scipy.sparse.csr_array`` of shape ``(T * m, n_params)``. A term that reads one
    parameter twice (a repeated index) adds both derivatives into one entry.

    >>> import numpy as np
    >>> # three terms p_i * p_j - 1 over four parameters
    >>> pairs = Terms(lambda p: p[0] * p[1] - 1.0, np.array([[0, 1], [1, 2], [2, 3]]), 4)
    >>> pairs.n_terms, pairs.residuals(np.arange(4.0))
    (3, array([-1.,  1.,  5.]))
    """

    def __init__(self, term, index, n_params, data=(), *, backend=None, method="auto"):
        index = np.asarray(index)
        if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must be a (T, k) integer array (term t reads parameters "
                             f"index[t]), got {index.dtype} of shape {index.shape}")
        if index.size and (index.min() < 0 or index.max() >= n_params):
            raise ValueError(f"index holds parameters outside 0 .. {n_params - 1}: "
                             f"{index.min()} .. {index.max()}")
        self.index, self.n_params = index, int(n_params)
        self.data = tuple(np.asarray(d) for d in data)
        for d in self.data:
            if d.ndim == 0 or d.shape[0] != index.shape[0]:
                raise ValueError(f"each data array needs one entry per term (first axis "
                                 f"{index.shape[0]}), got shape {d.shape}")
        self._vj = value_and_jacobian(term, sparse=True, backend=backend, method=method)
        self._scatter = None       # (indptr, indices, order into the problem's data), once
        self._last = None          # (params' bytes, r, J) of the latest evaluation

    @property
    def n_terms(self) -> int:
        """T, the number of terms."""
        return self.index.shape[0]

    def _evaluate(self, params):
        params = np.asarray(params, dtype=np.float64)
        if params.shape != (self.n_params,):
            raise ValueError(f"params must have shape ({self.n_params},), got {params.shape}")
        key = params.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1:]
        local = params[self.index]                                  # (T, k)
        value, jac = self._vj(local, *self.data)
        r = np.ascontiguousarray(value).reshape(-1)
        J = self._assemble(jac)
        self._last = (key, r, J)
        return r, J

    def _assemble(self, jac):
        """The problem's CSR Jacobian from the terms' sparse Jacobians ``jac``."""
        sparse = scipy_sparse()
        if self._scatter is None:
            self._scatter = _scatter(jac.pattern, self.index, self.n_params)
        indptr, indices, order, merged, local = self._scatter
        values = jac.values                                  # (T, nnz): pattern order
        if merged:
            data = np.zeros(indices.size, values.dtype)
            np.add.at(data, order, values.reshape(-1))
        elif local is None:
            data = np.empty(indices.size, values.dtype)
            data[order] = values.reshape(-1)
        elif local is _IDENTITY:
            data = values.reshape(-1)            # the kernel's fresh result, as it stands
        else:
            data = values[:, local].reshape(-1)
        return sparse.csr_array((data, indices, indptr), shape=(len(indptr) - 1, self.n_params))

    def residuals(self, params) -> np.ndarray:
        """``r(params)``, shape ``(T * m,)``: what ``scipy.optimize.least_squares`` calls
        ``fun``.

        >>> import numpy as np
        >>> Terms(lambda p: p[0] - 2.0, np.array([[0], [1]]), 2).residuals(np.ones(2))
        array([-1., -1.])
        """
        return self._evaluate(params)[0]

    def jacobian(self, params):
        """The sparse Jacobian ``(T * m, n_params)``, CSR (``least_squares``'s ``jac``).

        The values of the latest ``residuals`` call at the same ``params`` are reused:
        one kernel gives both.

        >>> import numpy as np
        >>> t = Terms(lambda p: p[0] * p[1], np.array([[0, 1], [1, 2]]), 3)
        >>> t.jacobian(np.array([1.0, 2.0, 3.0])).toarray()
        array([[2., 1., 0.],
               [0., 3., 2.]])
        """
        return self._evaluate(params)[1]

    def residuals_and_jacobian(self, params):
        """``(r, J)`` from one kernel.

        >>> import numpy as np
        >>> r, J = Terms(lambda p: p[0] ** 2, np.array([[0], [1]]), 2).residuals_and_jacobian(
        ...     np.array([1.0, 3.0]))
        >>> r, J.toarray()
        (array([1., 9.]), array([[2., 0.],
               [0., 6.]]))
        """
        return self._evaluate(params)

    def gauss_newton(self, params):
        """``(r, JᵀJ, Jᵀr)``: JᵀJ a sparse ``(n_params, n_params)`` CSR matrix.

        >>> import numpy as np
        >>> t = Terms(lambda p: p[0] - p[1], np.array([[0, 1], [1, 2]]), 3)
        >>> r, JtJ, Jtr = t.gauss_newton(np.array([3.0, 1.0, 0.0]))
        >>> JtJ.toarray(), Jtr
        (array([[ 1., -1.,  0.],
               [-1.,  2., -1.],
               [ 0., -1.,  1.]]), array([ 2., -1., -1.]))
        """
        r, J = self._evaluate(params)
        Jt = J.T.tocsr()
        return r, (Jt @ J).tocsr(), Jt @ r

    def jac_sparsity(self):
        """The Jacobian's structural non-zeros as a CSR matrix of ones (computed from one
        term's tape: every term shares its pattern), ``least_squares``'s ``jac_sparsity``.

        >>> import numpy as np
        >>> t = Terms(lambda p: np.stack([p[0], p[0] * p[1]]), np.array([[0, 1], [2, 1]]), 3)
        >>> t.jac_sparsity().toarray()
        array([[1., 0., 0.],
               [1., 1., 0.],
               [0., 0., 1.],
               [0., 1., 1.]])
        """
        sparse = scipy_sparse()
        if self._scatter is None:
            value, jac = self._vj(np.zeros((1, self.index.shape[1])),
                                  *(d[:1] for d in self.data))
            self._scatter = _scatter(jac.pattern, self.index, self.n_params)
        indptr, indices = self._scatter[:2]
        return sparse.csr_array((np.ones(indices.size), indices, indptr),
                                shape=(len(indptr) - 1, self.n_params))


def _scatter(pattern, index, n_params):
    """CSR structure of the problem's Jacobian and where each term's value goes in it.

    Term t's entry e (row ``pattern.rows[e]``, local column ``pattern.indices[e]``) is
    the problem's entry (``t * m + row``, ``index[t, column]``). Returns ``indptr``,
    ``indices``, ``order`` (the position in the problem's data of each term value, term
    by term), whether two values share a position (a term reading a parameter twice),
    and, where no two do, ``local``: the order of a term's values in the data that
    every term shares (``_IDENTITY`` where it is the pattern's own), or None. Each
    term's rows are its own, so its values fill one run of the data; in a problem
    whose index arrays list each term's parameters in increasing order (bundle
    adjustment: a camera's, then a point's) the values are in the data's order already,
    and assembling is no copy at all.
    """
    T = index.shape[0]
    m = pattern.shape[0]
    rows = (np.arange(T)[:, None] * m + pattern.rows[None, :]).ravel()
    cols = index[:, pattern.indices].ravel()
    key = rows.astype(np.int64) * n_params + cols
    unique, order = np.unique(key, return_inverse=True)
    u_rows, u_cols = np.divmod(unique, n_params)
    indptr = np.zeros(T * m + 1, np.int64)
    np.add.at(indptr, u_rows + 1, 1)
    order = order.ravel()
    merged = unique.size < key.size
    local = None
    if not merged and T:
        nnz = pattern.rows.size
        within = order.reshape(T, nnz) - (np.arange(T) * nnz)[:, None]   # each term's run
        if (within == within[0]).all():
            local = np.argsort(within[0])    # data position p of a term <- its value local[p]
            if (local == np.arange(nnz)).all():
                local = _IDENTITY
    small = max(n_params, u_cols.size) < np.iinfo(np.int32).max      # SciPy's own choice
    index_type = np.int32 if small else np.int64
    return (np.cumsum(indptr).astype(index_type), u_cols.astype(index_type), order, merged,
            local)


_IDENTITY = "identity"
