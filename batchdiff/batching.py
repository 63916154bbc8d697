"""Batches: checking the user's arrays and laying them out for an executor.

A batch is the leading axis of every argument with ``in_axes`` 0 (or the axis it
names); arguments with ``in_axes`` None are shared by all points. The executor gets
each argument as a 2-D block: ``(B, k)`` per point, ``(1, k)`` shared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ShapeError


@dataclass
class Batch:
    size: int                 # number of points, B
    shapes: list              # per-point shape of each argument
    blocks: list              # 2-D input blocks, (B, k) or (1, k)
    dtype: np.dtype           # the arithmetic dtype
    xp: object                # the array module of the inputs (numpy, or cupy)


def array_module(x):
    """numpy, or cupy for CuPy arrays (without importing cupy otherwise)."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def is_dask(x) -> bool:
    """Whether ``x`` is a Dask array (without importing Dask)."""
    return type(x).__module__.split(".")[0] == "dask"


def from_device(x):
    """A CUDA array of another library (PyTorch, JAX) as a CuPy array on its memory (DLPack)."""
    if type(x).__module__.split(".")[0] in ("numpy", "cupy", "builtins"):
        return x                        # the common case, without the DLPack queries
    from .kernels import cupy_exec
    return cupy_exec.from_dlpack(x) if cupy_exec.is_cuda_dlpack(x) else x


def _as_numeric(x, what, xp):
    try:
        arr = xp.asarray(x)
    except Exception as e:
        raise TypeError(f"{what} is a {type(x).__name__}, not an array of numbers: {e}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{what} is complex ({arr.dtype}); batchdiff differentiates real "
                        "functions: pass the real and imaginary parts as separate arguments")
    if kind not in "biuf":
        raise TypeError(f"{what} has dtype {arr.dtype}; batchdiff needs numbers "
                        "(bool, int or float arrays)")
    return arr


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return np.dtype(np.float64)      # integers and bools promote to float64
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def _axes(in_axes, n):
    if in_axes is None or isinstance(in_axes, (int, np.integer)):
        return [in_axes] * n
    axes = list(in_axes)
    if len(axes) != n:
        raise ValueError(f"in_axes has {len(axes)} entries but the function was given {n} "
                         "argument(s): give one entry (an axis or None) per argument")
    for a in axes:
        if a is not None and not isinstance(a, (int, np.integer)):
            raise TypeError(f"in_axes entries must be an int axis or None, got {a!r}")
    return axes


def prepare(args, in_axes) -> Batch:
    """Check the arguments of a call and lay them out as input blocks."""
    args = [from_device(a) for a in args]
    xp = next((array_module(a) for a in args if array_module(a) is not np), np)
    axes = _axes(in_axes, len(args))
    arrays, sizes = [], []
    for i, (x, axis) in enumerate(zip(args, axes)):
        arr = _as_numeric(x, f"argument {i}", xp)
        if axis is not None:
            if arr.ndim == 0:
                raise ShapeError(
                    f"argument {i} is a scalar but in_axes gives it batch axis {axis}: give it a "
                    "leading axis of points (e.g. x[None] or x.reshape(-1)), or pass in_axes=None "
                    "for it to share it across points")
            if not -arr.ndim <= axis < arr.ndim:
                raise ShapeError(f"in_axes={axis} for argument {i}, which has only {arr.ndim} axes")
            if axis % arr.ndim:             # moveaxis costs microseconds even as a no-op
                arr = xp.moveaxis(arr, axis, 0)
            sizes.append((i, arr.shape[0]))
        arrays.append(arr)
    if not sizes:
        raise ShapeError("no argument has a batch axis: at least one argument needs in_axes=0 "
                         "(its leading axis indexes the points)")
    size = sizes[0][1]
    for i, b in sizes:
        if b != size:
            raise ShapeError("arguments disagree on the number of points: " + ", ".join(
                f"argument {j} has {c}" for j, c in sizes) + "; give every batched argument "
                "the same leading length, or in_axes=None for arguments shared by all points")
    # Python numbers are "weak" (as in JAX): a 0.5 next to a float32 batch keeps float32
    strong = [a.dtype for a, x in zip(arrays, args) if not isinstance(x, (int, float, bool))]
    dtype = np.result_type(*(_float_dtype(d) for d in strong or [np.float64]))
    shapes, blocks = [], []
    for arr, axis in zip(arrays, axes):
        if axis is None:
            shapes.append(tuple(arr.shape))
            blocks.append(arr.reshape(1, math.prod(arr.shape)))
        else:
            shapes.append(tuple(arr.shape[1:]))
            blocks.append(arr.reshape(size, math.prod(arr.shape[1:])))
    return Batch(size, shapes, blocks, dtype, xp)


def extra_block(v, shape, batch: Batch, what: str):
    """A tangent or cotangent: per point ``(B, *shape)`` or shared ``shape``."""
    arr = _as_numeric(from_device(v), what, batch.xp)
    if tuple(arr.shape) == (batch.size,) + tuple(shape):
        return arr.reshape(batch.size, math.prod(shape))
    if tuple(arr.shape) == tuple(shape):
        return arr.reshape(1, math.prod(shape))
    raise ShapeError(f"{what} must have shape {(batch.size,) + tuple(shape)} (one per point) "
                     f"or {tuple(shape)} (shared by all points), got {tuple(arr.shape)}")
