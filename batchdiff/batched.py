"""A transform run on arrays in memory: its options, its traced programs, and a call.

``BatchedTransform`` holds a transform's checked options and one ``Program`` per
argument shapes and dtype (traced once, then cached). A call splits its arguments into
f's and the tangents or cotangent, lays them out as a batch, and runs the program over
it into fresh result arrays or the caller's ``out=``. ``api.Transformed`` builds on it
(keyword arguments, traced values, Dask arrays, inspection); a Dask worker runs its
blocks with one that holds the program the client traced (``dask_arrays``).

>>> import numpy as np
>>> BatchedTransform(lambda v: np.sum(v ** 2), "grad")(np.array([[1.0, 2.0]]))
array([[2., 4.]])
"""
from __future__ import annotations

import functools
import weakref

import numpy as np

from . import ad, batching, kernels, outputs
from .sparse import SparseResult
from .transforms import KINDS, TRANSFORMS, Program, _unpack, build_program


HESSIANS = ("hessian", "value_and_hessian", "value_grad_and_hessian")


def _check_mode(mode, kind):
    if mode not in ad.MODES:
        raise ValueError(f"mode={mode!r}: use one of {ad.MODES}")
    fixed = TRANSFORMS[kind].fixed_mode if kind in TRANSFORMS else ""
    if fixed and mode != "auto":
        raise ValueError(f"bd.{kind} is computed in {fixed} mode whatever mode says: "
                         f"mode={mode!r} would have no effect, so leave it out")


def _check_sparse(kind, sparse, triangle, single):
    """None (dense), "full" or "upper": how the results of a transform are stored."""
    if not isinstance(sparse, (bool, np.bool_)):
        raise TypeError(f"sparse must be True or False, got {sparse!r}")
    if triangle not in ("full", "upper"):
        raise ValueError(f"triangle={triangle!r}: use 'full' or 'upper'")
    if triangle == "upper" and not (sparse and kind in HESSIANS):
        raise ValueError("triangle='upper' stores half of a sparse Hessian: it goes with "
                         "bd.hessian(f, sparse=True, triangle='upper') (or value_and_hessian, "
                         "value_grad_and_hessian)")
    if triangle == "upper" and not single:
        raise ValueError("triangle='upper' needs one differentiated argument (argnums an "
                         "int): the blocks of a Hessian in several arguments are not "
                         "symmetric one by one; stack the arguments into one vector")
    return ("upper" if triangle == "upper" else "full") if sparse else None


class BatchedTransform:
    """A transform of ``f`` (one of ``transforms.KINDS``) run on in-memory batches.

    ``t(*args, out=None)``: f's positional arguments (then tangents or a cotangent),
    each a NumPy or CuPy array with its batch axis as ``in_axes`` says.
    """

    def __init__(self, f, kind, argnums=0, in_axes=0, backend=None, method="auto",
                 mode="auto", sparse=False, triangle="full"):
        if not callable(f):
            raise TypeError(f"batchdiff.{kind} needs a function, got {type(f).__name__}")
        if kind not in KINDS:
            raise ValueError(f"unknown transform {kind!r}")
        self.f, self.kind, self.in_axes = f, kind, in_axes
        self.single = isinstance(argnums, (int, np.integer))
        if not (self.single or isinstance(argnums, (tuple, list)) and argnums and all(
                isinstance(a, (int, np.integer)) for a in argnums)):
            raise TypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
        self.argnums = (int(argnums),) if self.single else tuple(int(a) for a in argnums)
        if len(set(self.argnums)) != len(self.argnums):
            raise ValueError(f"argnums {argnums!r} repeats an argument")
        _check_mode(mode, kind)
        kernels.check_choice(backend, method)
        self.backend, self.method, self.mode = backend, method, mode
        self.sparse = _check_sparse(kind, sparse, triangle, self.single)
        self._programs: dict = {}
        self._fast = None
        functools.update_wrapper(self, f, updated=())

    @property
    def n_extra(self) -> int:
        """How many arguments after f's own: tangents (jvp, hvp) or a cotangent (vjp)."""
        extra = TRANSFORMS[self.kind].extra
        return len(self.argnums) if extra == "tangent" else 1 if extra else 0

    def _split(self, args):
        n_f = len(args) - self.n_extra
        if n_f < 1 and not self.n_extra:
            raise TypeError(f"{self.kind} was called with no arguments: call it on a batch of "
                            "points, g(X), where f takes one point as its first argument "
                            "(X of shape (B, ...)); a function of no arguments has nothing "
                            "to differentiate")
        if n_f < 1:
            what = TRANSFORMS[self.kind].extra
            raise TypeError(f"{self.kind} takes the function's arguments followed by "
                            f"{self.n_extra} {what} array(s); got {len(args)} argument(s)")
        for a in self.argnums:
            if not -n_f <= a < n_f:
                raise ValueError(f"argnums={a} but the function was given {n_f} argument(s)")
        return args[:n_f], args[n_f:]

    def _argnums(self, n_f):
        return tuple(a % n_f for a in self.argnums)

    def _program(self, shapes, dtype) -> Program:
        key = (tuple(shapes), np.dtype(dtype).str)
        prog = self._programs.get(key)
        if prog is None:
            prog = build_program(self.kind, self.f, shapes, self._argnums(len(shapes)),
                                 self.mode, dtype, self.sparse)
            if not prog.captured:        # captured values belong to one enclosing trace
                self._programs[key] = prog
        return prog

    def extra_shapes(self, shapes, out_shape) -> list:
        """Per-point shapes of the arguments after f's own, for f's argument ``shapes``
        and output shape: tangents (jvp, hvp), the cotangent (vjp), the damping λ."""
        extra = TRANSFORMS[self.kind].extra
        if extra == "cotangent":
            return [out_shape]
        if extra == "damping":
            return [()]
        if extra == "tangent":
            return [shapes[i] for i in self._argnums(len(shapes))]
        return []

    def _extra_blocks(self, extra, batch, prog):
        """Tangents / cotangent as input blocks, checked against the shapes they must have."""
        shapes = self.extra_shapes(batch.shapes, prog.out_shape)
        what = {"cotangent": "cotangent (shaped like the function's output)",
                "damping": "damping λ (one number per point, or one for all)",
                "tangent": "tangent (shaped like the argument it goes with)"
                }.get(TRANSFORMS[self.kind].extra, "")
        blocks = []
        for k, (v, shape) in enumerate(zip(extra, shapes)):
            blocks.append(batching.extra_block(v, shape, batch, f"{self.kind} {what} #{k}"))
        return blocks

    def _prepare(self, args):
        """The program, the batch and the tangent/cotangent blocks of a call on ``args``."""
        prim, extra = self._split(args)
        batch = batching.prepare(prim, self.in_axes)
        prog = self._program(batch.shapes, batch.dtype)
        return prog, batch, self._extra_blocks(extra, batch, prog)

    def _run(self, prog, batch, extra_blocks, out, args=None):
        """Run ``prog`` over ``batch``: the results, in ``out`` when it is given.

        ``args``: the call's own arguments, for ``_Fast`` to learn their signature."""
        name = kernels.resolve(self.backend, batch.xp)
        if args is not None and batch.xp is np:
            self._fast = _Fast.of(self, args, prog, batch, extra_blocks, name, out)
        if out is None:
            given = [None] * len(prog.leaves)
            arrays = [_new_leaf(leaf, name, batch) for leaf in prog.leaves]
        else:
            given = outputs.match(out, _unpack(self.kind, prog.results, self.single,
                                               lambda leaf: leaf), prog.leaves)
            arrays = [outputs.check(g, leaf, batch, name) for g, leaf in zip(given, prog.leaves)]
            outputs.check_overlap(arrays, batch.blocks + extra_blocks, batch.xp)
        kernels.execute(prog.executable, batch.blocks + extra_blocks, batch,
                        [outputs.rows(a, leaf.width, batch.xp) for a, leaf in
                         zip(arrays, prog.leaves)], name, self.method, fresh=out is None)
        results = {id(leaf): (a, g) for leaf, a, g in zip(prog.leaves, arrays, given)}
        return _unpack(self.kind, prog.results, self.single,
                       lambda leaf: _result(leaf, *results[id(leaf)]))

    def __call__(self, *args, out=None):
        """Evaluate on a batch: f's positional arguments (then tangents or a cotangent)."""
        fast = self._fast
        if fast is not None and fast.takes(args, out):
            return fast(args, out)
        return self._run(*self._prepare(args), out, args)


class _Fast:
    """A transform's call on arguments of the signature its last call had: the same
    types, shapes and dtypes, given the same way (NumPy arrays of the batch's float
    dtype, no tangents or cotangents), and no ``out=`` or the same one array again.
    What the first call of that signature checked and laid out holds for these: the
    program, the input blocks' shapes, the back end and the results' layout. So such a
    call reshapes its arrays, allocates its results (or reuses ``out``) and runs the
    kernel, nothing else. ``out`` is held by a weak reference: a buffer the caller
    drops is not kept alive here.
    """
    __slots__ = ("signature", "out", "run")

    @classmethod
    def of(cls, transform, args, prog, batch, extra_blocks, name, out=None):
        """The fast call of ``args``' (and ``out``'s) signature, or None where it does not
        apply. ``extra_blocks``: the blocks of the tangents or cotangent among ``args``."""
        blocks = batch.blocks + extra_blocks
        if prog.captured or len(args) != len(blocks):
            return None
        shapes = list(batch.shapes) + transform.extra_shapes(batch.shapes, prog.out_shape)
        signature, layout = [], []
        for a, shape, block in zip(args, shapes, blocks):
            if type(a) is not np.ndarray or a.dtype != batch.dtype:
                return None
            if a.shape == (batch.size,) + shape:       # per point on axis 0
                layout.append(block.shape)
            elif a.shape == shape and block.shape[0] == 1 and (batch.size != 1 or not shape):
                layout.append(block.shape)              # shared
            else:
                return None
            signature.append(a.shape)
        size, dtype, leaves = batch.size, batch.dtype, prog.leaves
        if out is not None and not (
                len(leaves) == 1 and leaves[0].pattern is None and type(out) is np.ndarray
                and _unpack(transform.kind, prog.results, transform.single,
                            lambda leaf: leaf) is leaves[0]
                and out.dtype == dtype and out.shape == (size,) + leaves[0].shape
                and out.flags.c_contiguous and out.flags.writeable):
            return None
        fast = cls()
        fast.signature = (tuple(signature), dtype)
        fast.out = None if out is None else weakref.ref(out)
        kind, results, single = transform.kind, prog.results, transform.single
        executable, method, shapes = prog.executable, transform.method, batch.shapes
        width = leaves[0].width
        n_f = len(batch.blocks)           # f's own blocks, then the extras

        def run(arrays, out):
            blocks = [a.reshape(rows) for a, rows in zip(arrays, layout)]
            call = batching.Batch(size, shapes, blocks[:n_f], dtype, np)
            if out is not None:
                kernels.execute(executable, blocks, call, [out.reshape(size, width)], name,
                                method, fresh=False)
                return out
            fresh = [_new_leaf(leaf, name, call) for leaf in leaves]
            kernels.execute(executable, blocks, call,
                            [outputs.rows(a, leaf.width, np) for a, leaf in zip(fresh, leaves)],
                            name, method, fresh=True)
            made = {id(leaf): a for leaf, a in zip(leaves, fresh)}
            return _unpack(kind, results, single, lambda leaf: _result(leaf, made[id(leaf)], None))
        fast.run = run
        return fast

    def takes(self, args, out=None) -> bool:
        """Whether a call on ``args`` (into ``out``) has this signature."""
        shapes, dtype = self.signature
        if len(args) != len(shapes):
            return False
        if out is not None and (self.out is None or self.out() is not out):
            return False
        if out is None and self.out is not None:
            return False
        for a, shape in zip(args, shapes):
            if type(a) is not np.ndarray or a.shape != shape or a.dtype != dtype:
                return False
            if out is not None and np.may_share_memory(a, out):
                return False                 # the full path says why that cannot be
        return True

    def __call__(self, args, out=None):
        return self.run(args, out)


def _new_leaf(leaf, name, batch):
    """A fresh array for ``leaf``: ``(B, *shape)`` dense, ``(B, nnz)`` sparse values."""
    if leaf.pattern is not None:
        return kernels.empty(name, batch.xp, leaf.width, batch.size, batch.dtype,
                             contiguous=True)
    rows = kernels.empty(name, batch.xp, leaf.width, batch.size, batch.dtype)
    return outputs.unflatten(rows, (batch.size,) + leaf.shape, batch.xp)


def _result(leaf, array, given):
    """What the caller gets for ``leaf``: the array, a SparseResult, or what they passed."""
    if leaf.pattern is None:
        return array
    if isinstance(given, SparseResult):
        return given
    return SparseResult(array, leaf.pattern, leaf.shape)
