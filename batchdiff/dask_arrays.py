"""Dask arrays in, lazy Dask arrays out: a transform run block by block on any Dask scheduler.

``bd.hessian(f)(X)`` with ``X`` a ``dask.array.Array`` returns a lazy Dask array of the
documented shape and dtype, chunked along the batch axis like ``X`` (the per-point axes
of every argument are one chunk; they are rechunked when they are not). Each block is
computed by the normal in-memory path on the block's NumPy (or CuPy) arrays, on
whichever scheduler computes it: the local threaded one, or a ``dask.distributed``
cluster (``LocalCluster``, dask-jobqueue, dask-cuda).

What travels to a worker is a ``_Plan``: the derivative tape traced on the client (plain
data: tuples of instructions), its result layout and the transform's options; it is one
key of the graph, so a worker fetches it once, not once per task. Each worker process
builds its executor from it once and loads kernels from the kernel cache of its own
machine (generating the source from the tape and looking it up by its hash), compiling
only what that cache lacks. No compiled object and no user function is ever pickled.

Arguments: batched arguments are Dask arrays or NumPy arrays (these are cut into the
batch's chunks); shared ones (``in_axes=None``) are NumPy arrays, numbers or small
Dask arrays, computed once and given whole to every block. Tangents and cotangents are
per point (chunked like the batch) or shared, as in memory. The batch's chunks are
those of the first batched Dask argument (one block if only a shared argument is a Dask
array). A sparse result is a ``DaskSparseResult``: the pattern, known at once, and a
lazy ``(B, nnz)`` values array.

Threads: a block's kernel runs on as many Numba threads as its Dask worker has task
threads, so a cluster of worker processes uses each core once: with one thread per
worker process every kernel runs on one core, and a worker with several threads runs
its kernels one at a time (a process-wide lock: Numba's workqueue layer aborts on
concurrent parallel launches), each on all of that worker's threads. On the local
threaded scheduler kernels use every core, one at a time.

``out=`` is refused (Dask arrays are immutable). The logger ``batchdiff.dask_arrays``
tells, at INFO, how long each process's first block took (its start-up: loading or
compiling kernels) and, at DEBUG, the blocks and tape of each call.

>>> import numpy as np, dask.array as da, batchdiff as bd
>>> X = da.from_array(np.arange(10.0).reshape(5, 2), chunks=(2, 2))
>>> H = bd.hessian(lambda v: v[0] ** 2 * v[1], backend="numpy")(X)
>>> H.shape, H.chunks[0], H.dtype
((5, 2, 2), (2, 2, 1), dtype('float64'))
>>> H.compute()[2]
array([[10.,  8.],
       [ 8.,  0.]])
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import operator
import pickle
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import batching, kernels
from .batched import BatchedTransform
from .sparse import Pattern, SparseBatch, SparseResult
from .transforms import Program, _unpack

log = logging.getLogger(__name__)


def call(transformed, args, out=None):
    """``transformed(*args)`` where some arguments are Dask arrays: lazy Dask results.

    The results are nested as in memory (tuples for ``value_and_grad``, ``jvp``,
    ``vjp`` and argnums tuples), each leaf a Dask array ``(B, ...)`` chunked like the
    batch, or a ``DaskSparseResult`` for ``sparse=True``.

    >>> import numpy as np, dask.array as da, batchdiff as bd
    >>> X = da.ones((7, 3), chunks=(3, 3))
    >>> value, grad = bd.value_and_grad(lambda x: np.sum(x ** 2), backend="numpy")(X)
    >>> value.chunks, grad.chunks
    (((3, 3, 1),), ((3, 3, 1), (3,)))
    >>> grad.sum().compute()
    np.float64(42.0)
    """
    if out is not None:
        raise TypeError(f"{transformed.kind}: out= cannot take Dask inputs (Dask arrays are "
                        "immutable and computed later): drop out= and use the lazy result, "
                        "or map your own in-place call over the blocks with .map_blocks")
    _check_dask_kinds(args)
    prim, extra = transformed._split(args)
    batch = batching.prepare([stand_in(a) for a in prim], transformed.in_axes)
    prog = transformed._program(batch.shapes, batch.dtype)
    if prog.captured:
        raise TypeError(f"{transformed.kind} of a function that closes over traced values "
                        "cannot run on Dask arrays: call it on in-memory arrays")
    shapes = transformed.extra_shapes(batch.shapes, prog.out_shape)
    transformed._extra_blocks([stand_in(v) for v in extra], batch, prog)  # same errors
    axes = batching._axes(transformed.in_axes, len(prim))
    chunks = _batch_chunks(prim, axes, extra, shapes, batch.size)
    axes += [0 if np.ndim(v) == len(shape) + 1 else None for v, shape in zip(extra, shapes)]
    arrays = [_as_block_array(x, axis, chunks, batch.dtype) for x, axis in zip(args, axes)]
    plan = _Plan.of(transformed, tuple(None if a is None else 0 for a in axes[:len(prim)]),
                    (tuple(batch.shapes), batch.dtype.str), prog)
    leaves = prog.leaves
    metas = _meta(next(a for a in args if batching.is_dask(a)), leaves, batch.dtype)
    results = _blockwise(plan, arrays, [a is not None for a in axes],
                         list(batch.shapes) + list(shapes), leaves, metas,
                         f"batchdiff_{transformed.kind}")
    log.debug("%s on Dask arrays: %d points in %d blocks, tape of %d ops",
              transformed.kind, batch.size, len(chunks), prog.tape.num_ops)
    by_leaf = {id(leaf): r for leaf, r in zip(leaves, results)}
    return _unpack(transformed.kind, prog.results, transformed.single,
                   lambda leaf: _lazy_result(leaf, by_leaf[id(leaf)]))


# -- the client side: checking and laying out the arguments ----------------------------

def _check_dask_kinds(args):
    import dask.array as da
    for i, a in enumerate(args):
        if batching.is_dask(a) and not isinstance(a, da.Array):
            raise TypeError(f"argument {i} is a {type(a).__module__}.{type(a).__name__}; "
                            "batchdiff takes Dask arrays (e.g. .to_dask_array(lengths=True))")
        if batching.is_dask(a) and any(math.isnan(s) for s in a.shape):
            raise ValueError(f"argument {i} is a Dask array of unknown shape {a.shape}: "
                             "call .compute_chunk_sizes() on it first")


def stand_in(x):
    """For a Dask array, a NumPy view of its shape and dtype on no memory; else ``x``.

    The in-memory checks and the tracer need only shapes and dtypes: this gives them
    those of a Dask array without computing it (all its strides are 0).

    >>> import dask.array as da
    >>> s = stand_in(da.ones((10 ** 9, 3), dtype="float32"))
    >>> s.shape, s.dtype, s.strides
    ((1000000000, 3), dtype('float32'), (0, 0))
    """
    if not batching.is_dask(x):
        return x
    return np.lib.stride_tricks.as_strided(np.zeros((), x.dtype), x.shape, (0,) * x.ndim)


def _batch_chunks(prim, axes, extra, extra_shapes, size) -> tuple:
    """The batch's chunks: those of the first batched Dask argument, else one block."""
    for x, axis in zip(prim, axes):
        if axis is not None and batching.is_dask(x):
            return x.chunks[axis % x.ndim]
    for v, shape in zip(extra, extra_shapes):
        if batching.is_dask(v) and v.ndim == len(shape) + 1:
            return v.chunks[0]
    return (size,)


def _as_block_array(x, axis, chunks, dtype):
    """``x`` laid out for ``blockwise``: batch axis first in ``chunks``, the rest whole.

    Shared arguments (``axis`` None) become one chunk; numbers become 0-d arrays of the
    batch's dtype, so that they stay "weak" as in memory (0.5 keeps a float32 batch).
    """
    import dask.array as da
    if not batching.is_dask(x):
        if axis is None and isinstance(x, (int, float, bool)):
            return np.asarray(x, dtype=dtype)
        x = batching.from_device(x)
        x = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
        if axis is None:
            return x
        x = batching.array_module(x).moveaxis(x, axis, 0)
        return da.from_array(x, chunks=(chunks,) + x.shape[1:], name=False)
    if axis is None:
        return x.rechunk(-1)
    x = da.moveaxis(x, axis, 0) if axis % x.ndim else x     # an identity moveaxis adds a layer
    return x.rechunk((chunks,) + tuple((n,) for n in x.shape[1:]))


def _leaf_shape(leaf) -> tuple:
    """Per-point shape of a leaf's array: dense shape, or ``(nnz,)`` sparse values."""
    return leaf.shape if leaf.pattern is None else (leaf.width,)


def _blockwise(plan, arrays, batched, cores, leaves, metas, prefix) -> tuple:
    """A Dask array per leaf: one task per block of the batch runs ``plan`` on all leaves.

    Batched arrays share the batch index; per-point (core) axes, one chunk each, get an
    index of their own, so each task receives whole points. Several leaves come from one
    task as a tuple, split by a ``getitem`` per leaf.
    """
    import dask
    import dask.array as da
    pairs = []
    for i, (a, per_point, core) in enumerate(zip(arrays, batched, cores)):
        pairs += [a, ("b",) * per_point + tuple(f"a{i}_{k}" for k in range(len(core)))]
    token = dask.base.tokenize(plan.token, *arrays)
    options = dict(concatenate=True, name=f"{prefix}-{token}", plan=dask.delayed(
        plan, name=f"batchdiff-plan-{plan.token}", traverse=False))
    shapes = [_leaf_shape(leaf) for leaf in leaves]
    if len(leaves) == 1:
        new = {f"r{k}": n for k, n in enumerate(shapes[0])}
        return (da.blockwise(_run_block, ("b", *new), *pairs, new_axes=new, meta=metas[0],
                             **options),)
    whole = da.blockwise(_run_block, ("b",), *pairs, meta=metas, **options)
    return tuple(whole.map_blocks(operator.getitem, j, meta=meta, name=f"{prefix}_{j}-{token}",
                                  chunks=whole.chunks + tuple((n,) for n in shape),
                                  new_axis=list(range(1, 1 + len(shape))))
                 for j, (shape, meta) in enumerate(zip(shapes, metas)))


def _meta(like, leaves, dtype) -> tuple:
    """Empty arrays of each result's dimensions and dtype, of ``like``'s array kind."""
    from dask.array.utils import meta_from_array
    return tuple(meta_from_array(like._meta, 1 + len(_leaf_shape(leaf)), dtype=dtype)
                 for leaf in leaves)


def _lazy_result(leaf, array):
    return array if leaf.pattern is None else DaskSparseResult(array, leaf.pattern, leaf.shape)


# -- the worker side --------------------------------------------------------------------

def _traced_on_client(*args):
    raise AssertionError("a batchdiff worker got blocks whose shapes or dtype differ from "
                         "the ones the client traced; this is a bug, please report it")


@dataclass(frozen=True, eq=False)
class _Plan:
    """What a worker needs to run blocks: the client's program and the transform's options.

    Plain data (tuples, a few small NumPy arrays): it pickles without the user's function,
    without caches and without compiled code.
    """
    kind: str
    argnums: object               # int or tuple, as given (an int gives unnested results)
    in_axes: tuple                # 0 or None per argument: batch axes come first in blocks
    backend: object
    method: str
    mode: str
    sparse: object                # None, "full" or "upper"
    key: tuple                    # (per-point shapes, dtype): the program's cache key
    program: Program

    @classmethod
    def of(cls, t, in_axes, key, program) -> "_Plan":
        return cls(t.kind, t.argnums[0] if t.single else t.argnums, in_axes, t.backend,
                   t.method, t.mode, t.sparse, key, program)

    @functools.cached_property
    def token(self) -> str:
        """A digest of the whole plan: its key in the graph."""
        return hashlib.sha256(pickle.dumps(self, protocol=5)).hexdigest()[:32]

    @functools.cached_property
    def runner(self) -> BatchedTransform:
        """The transform, holding the client's program: built once per process, never traced."""
        t = BatchedTransform(_traced_on_client, self.kind, self.argnums, self.in_axes,
                             self.backend, self.method, self.mode, sparse=self.sparse is not None,
                             triangle="upper" if self.sparse == "upper" else "full")
        t._programs[self.key] = self.program
        return t

    def __getstate__(self):
        # cached properties are per process: a worker builds its own runner
        return {k: v for k, v in self.__dict__.items() if k not in ("runner", "token")}


def _run_block(*blocks, plan: _Plan):
    """One block of the batch through the in-memory path; the result's leaves, flat."""
    first, start = "runner" not in plan.__dict__, time.perf_counter()
    with _kernel_threads(plan, blocks):
        result = plan.runner(*blocks)
    if first:       # what a worker's start-up costs: loading (or compiling) kernels
        log.info("%s: the first block of this process (%d points) took %.2f s", plan.kind,
                 len(blocks[plan.in_axes.index(0)]), time.perf_counter() - start)
    flat = []
    _flatten(result, flat.append)
    return flat[0] if len(flat) == 1 else tuple(flat)


def _flatten(result, emit):
    if isinstance(result, tuple):
        for r in result:
            _flatten(r, emit)
    else:
        emit(result.values if isinstance(result, SparseResult) else result)


def _worker_threads():
    """The task threads of the ``dask.distributed`` worker running this task, or None."""
    distributed = sys.modules.get("distributed")     # never imported just to ask
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:                               # not inside a worker's task
        return None
    return getattr(worker, "state", worker).nthreads  # .state since distributed 2022.11


@contextlib.contextmanager
def _kernel_threads(plan, blocks):
    """Numba threads for this task's kernels: the worker's task threads (module docstring).

    Numba's thread count is per calling thread, so this does not touch other tasks.
    """
    threads = _worker_threads()
    on_cpu = all(batching.array_module(b) is np for b in blocks if hasattr(b, "shape"))
    if threads is None or not on_cpu or plan.backend not in (None, "numba") or not (
            kernels.backend("numba").available()):
        yield
        return
    import numba

    from .kernels import cache
    cache._prepare_numba()      # Numba's threads start at the first get/set: fork-safe layer
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


# -- sparse results ------------------------------------------------------------------------

class DaskSparseResult(SparseBatch):
    """A lazy batch of sparse matrices: one ``Pattern`` and a Dask ``(B, nnz)`` values array.

    The pattern comes from the tape, so it is known before anything is computed.
    ``compute()`` gives an in-memory ``SparseResult``; ``to_dense()`` a lazy Dask array,
    block by block; ``to_scipy(b)`` computes the one point it needs. Anything blockwise
    (a solve per point, a reduction) works on ``values`` with Dask's own operations.

    >>> import numpy as np, dask.array as da, batchdiff as bd
    >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
    >>> J = bd.jacobian(F, sparse=True, backend="numpy")(da.ones((5, 2), chunks=2))
    >>> J
    <DaskSparseResult: 5 points of 3x2 matrices, 4 non-zeros each, float64, 3 blocks>
    >>> J.values.chunks
    ((2, 2, 1), (4,))
    >>> J.compute().to_dense()[0]
    array([[2., 0.],
           [1., 1.],
           [0., 2.]])
    """
    __slots__ = ("values", "pattern", "dense_shape")

    def __init__(self, values, pattern: Pattern, dense_shape: tuple):
        if values.ndim != 2 or values.shape[1] != pattern.nnz:
            raise ValueError(f"values must have shape (points, {pattern.nnz}); got {values.shape}")
        self.values, self.pattern, self.dense_shape = values, pattern, tuple(dense_shape)

    def __repr__(self):
        (m, n), B = self.matrix_shape, len(self)
        return (f"<DaskSparseResult: {B} point{'' if B == 1 else 's'} of {m}x{n} matrices, "
                f"{self.nnz} non-zeros each, {self.dtype}, {self.values.numblocks[0]} blocks>")

    def compute(self, **kwargs) -> SparseResult:
        """The in-memory ``SparseResult`` (``kwargs`` go to ``dask.compute``).

        >>> import numpy as np, dask.array as da, batchdiff as bd
        >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
        >>> J = bd.jacobian(F, sparse=True, backend="numpy")(da.ones((5, 2), chunks=2))
        >>> J.compute()
        <SparseResult: 5 points of 3x2 matrices, 4 non-zeros each (66.7%), float64>
        """
        return SparseResult(self.values.compute(**kwargs), self.pattern, self.dense_shape)

    def persist(self, **kwargs) -> "DaskSparseResult":
        """The same result with its values computed and kept on the workers.

        >>> import numpy as np, dask.array as da, batchdiff as bd
        >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
        >>> J = bd.jacobian(F, sparse=True, backend="numpy")(da.ones((5, 2), chunks=2))
        >>> J.persist()
        <DaskSparseResult: 5 points of 3x2 matrices, 4 non-zeros each, float64, 3 blocks>
        """
        return DaskSparseResult(self.values.persist(**kwargs), self.pattern, self.dense_shape)

    def to_dense(self):
        """The dense result, ``(B, *dense_shape)``, as a lazy Dask array chunked like values.

        >>> import numpy as np, dask.array as da, batchdiff as bd
        >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
        >>> J = bd.jacobian(F, sparse=True, backend="numpy")(da.ones((5, 2), chunks=2))
        >>> D = J.to_dense()
        >>> D.shape, D.chunks[0]
        ((5, 3, 2), (2, 2, 1))
        >>> D[0].compute()
        array([[2., 0.],
               [1., 1.],
               [0., 2.]])
        """
        ndim = len(self.dense_shape)
        return self.values.map_blocks(
            _dense_block, self.pattern, self.dense_shape, dtype=self.dtype,
            chunks=(self.values.chunks[0],) + tuple((d,) for d in self.dense_shape),
            drop_axis=1, new_axis=list(range(1, 1 + ndim)),
            name="batchdiff_to_dense-" + _dask_token(self.values.name, self.pattern))

    def to_scipy(self, b):
        """Point ``b`` as a SciPy CSR matrix (computes that point's values only).

        >>> import numpy as np, dask.array as da, batchdiff as bd
        >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
        >>> J = bd.jacobian(F, sparse=True, backend="numpy")(da.ones((5, 2), chunks=2))
        >>> A = J.to_scipy(4)
        >>> A.shape, A.nnz
        ((3, 2), 4)
        """
        b = operator.index(b)
        if not -len(self) <= b < len(self):
            raise IndexError(f"point {b} is out of range for a batch of {len(self)} points")
        b %= len(self)
        row = self.values[b:b + 1].compute()
        return SparseResult(np.ascontiguousarray(row), self.pattern, self.dense_shape).to_scipy(0)

    def block_diag(self):
        """The whole batch as one block-diagonal CSR matrix: computes every value.

        >>> import numpy as np, dask.array as da, batchdiff as bd
        >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
        >>> J = bd.jacobian(F, sparse=True, backend="numpy")(da.ones((5, 2), chunks=2))
        >>> J.block_diag().shape                  # 5 blocks of 3 x 2
        (15, 10)
        """
        return self.compute().block_diag()


def _dense_block(values, pattern, dense_shape):
    xp = batching.array_module(values)
    return SparseResult(xp.ascontiguousarray(values), pattern, dense_shape).to_dense()


def _dask_token(*parts) -> str:
    import dask
    return dask.base.tokenize(*parts)
