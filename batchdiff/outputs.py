"""Result arrays: the caller's ``out=`` buffers, checked, and the 2-D views executors write.

Every result array (a *leaf*: one array of a transform's result, e.g. the values or the
gradient of ``value_and_grad``) is written by the executors as a ``(B, w)`` matrix, one
row per point. Fresh leaves are allocated in the layout the back end writes best; a
caller's ``out=`` leaf is checked here (kind, device, dtype, shape, writable, layout)
and written in place, never through a temporary of its size.
"""
from __future__ import annotations

import math

import numpy as np

from .batching import array_module
from .errors import ShapeError


def match(out, structure, leaves) -> list:
    """The caller's ``out`` leaf for each of ``leaves``, walking ``structure`` beside it.

    ``structure`` is the transform's result with a Leaf in place of each array; ``out``
    must have the same nesting of tuples.
    """
    found = {}

    def walk(o, s, where):
        if not isinstance(s, tuple):
            if isinstance(o, (tuple, list)):
                raise TypeError(f"out{where} is a {type(o).__name__}, but the result there is "
                                "one array: pass the array")
            found[id(s)] = o
            return
        if not isinstance(o, (tuple, list)) or len(o) != len(s):
            raise TypeError(f"out{where} must be a tuple of {len(s)} arrays, matching the "
                            f"result's structure {_describe(s)}; got {_describe_given(o)}")
        for k, (oo, ss) in enumerate(zip(o, s)):
            walk(oo, ss, f"{where}[{k}]")

    walk(out, structure, "")
    return [found[id(leaf)] for leaf in leaves]


def _describe(s):
    if isinstance(s, tuple):
        return "(" + ", ".join(_describe(x) for x in s) + ")"
    return f"values (B, {s.width})" if s.pattern is not None else f"array (B, *{s.shape})"


def _describe_given(o):
    if isinstance(o, (tuple, list)):
        return f"a {type(o).__name__} of {len(o)}"
    return f"a {type(o).__name__}"


def check(given, leaf, batch, backend) -> object:
    """``given`` (an ``out=`` leaf) checked against ``leaf``; returns the array to write.

    A sparse leaf takes a values array ``(B, nnz)`` or a SparseResult of the same
    pattern (its values are reused).
    """
    from .sparse import SparseResult
    if leaf.pattern is not None and isinstance(given, SparseResult):
        if given.pattern != leaf.pattern:
            raise ValueError(f"out= is a SparseResult of another pattern ({given.nnz} "
                             f"non-zeros of {given.matrix_shape}); this transform stores "
                             f"{leaf.width} non-zeros of {leaf.pattern.shape}: pass a "
                             "result of this transform at these argument shapes")
        given = given.values
    expected = (batch.size,) + ((leaf.width,) if leaf.pattern is not None else leaf.shape)
    what = "sparse values" if leaf.pattern is not None else "array"
    if not (hasattr(given, "shape") and hasattr(given, "dtype")):
        raise TypeError(f"out= must hold arrays; got a {type(given).__name__} where an "
                        f"{what} of shape {expected} goes")
    kind = array_module(given)
    if kind is not batch.xp:
        raise TypeError(f"out= array is a {type(given).__module__}.{type(given).__name__}, "
                        f"but the inputs are {batch.xp.__name__} arrays: give a "
                        f"{batch.xp.__name__} array of shape {expected}, dtype {batch.dtype}")
    if kind.__name__ == "cupy":
        device = batch.blocks[0].device if batch.blocks else None
        if device is not None and given.device != device:
            raise ValueError(f"out= array is on {given.device}, the inputs on {device}: "
                             "allocate it on the inputs' device")
    if given.dtype != batch.dtype:
        raise TypeError(f"out= {what} has dtype {given.dtype}, the result is {batch.dtype} "
                        f"(the inputs' float type): give an array of shape {expected}, "
                        f"dtype {batch.dtype}")
    if tuple(given.shape) != expected:
        raise ShapeError(f"out= {what} has shape {tuple(given.shape)}; the result needs "
                         f"{expected} (dtype {batch.dtype})")
    flags = getattr(given, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError("out= array is read-only: pass a writable array "
                         f"(e.g. np.empty({expected}, dtype={batch.dtype.name!r}))")
    if kind is np and backend != "numpy" and not given.flags.c_contiguous:
        raise ValueError(f"out= array must be C-contiguous for backend {backend!r} (the "
                         f"kernels write each point's row in place); got strides "
                         f"{given.strides}: pass np.ascontiguousarray(...) once and reuse it")
    rows(given, math.prod(expected[1:]), kind)        # raises if it has no (B, w) view
    return given


def check_overlap(arrays, blocks, xp):
    """No two ``out=`` leaves share memory, and none shares memory with an input."""
    overlap = getattr(xp, "may_share_memory", None)
    if overlap is None:
        return
    for i, a in enumerate(arrays):
        for b in arrays[:i]:
            if a.size and b.size and overlap(a, b):
                raise ValueError("two out= arrays share memory: each result needs its own")
        for b in blocks:
            if a.size and b.size and overlap(a, b):
                raise ValueError("an out= array shares memory with an input: the kernels "
                                 "read the inputs while they write; use separate arrays")


def rows(a, width: int, xp):
    """``a`` (shape ``(B, ...)``) as a ``(B, width)`` view on the same memory.

    The per-point axes must merge into one strided axis (true of every C-contiguous
    array and of the batch-fastest views the GPU writes); otherwise a reshape would
    copy and the results would be lost, so this raises instead.
    """
    size = a.shape[0]
    if a.ndim == 2:
        return a
    if a.flags.c_contiguous:
        return a.reshape(size, width)
    if a.size == 0:
        return xp.empty((size, width), dtype=a.dtype)     # nothing to write
    axes = [(n, s) for n, s in zip(a.shape[1:], a.strides[1:]) if n != 1]
    step = axes[-1][1] if axes else a.itemsize
    for (n, s), (n_next, s_next) in zip(axes, axes[1:]):
        if s != s_next * n_next:
            raise ValueError(f"out= array with strides {a.strides} cannot be written in "
                             "place (its per-point axes do not merge into one); pass a "
                             "C-contiguous array")
    return xp.lib.stride_tricks.as_strided(a, (size, width), (a.strides[0], step))


def unflatten(matrix, shape, xp):
    """A fresh ``(B, w)`` leaf (C-contiguous or batch-fastest) as ``shape``, a view."""
    if matrix.flags.c_contiguous:
        return matrix.reshape(shape)
    return xp.moveaxis(matrix.T.reshape(shape[1:] + (shape[0],)), -1, 0)
