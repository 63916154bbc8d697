"""Back ends: the executors that run a tape over a batch, and the registry choosing one.

- ``numpy``: the reference interpreter (``batchdiff.interpreter``), the spec;
- ``numba``: CPU cores, by tape replay or compiled kernels (``numba_exec``);
- ``cupy``: NVIDIA GPUs, one thread per point in compiled CUDA kernels (``cupy_exec``).

``backend=None`` picks ``numba`` for NumPy arrays (``numpy`` where Numba is missing) and
``cupy`` for CuPy arrays (and CUDA arrays of other libraries, taken in through DLPack).
"""
from __future__ import annotations

import importlib.util

from batchdiff.errors import BackendUnavailableError
from batchdiff.interpreter import evaluate

BACKENDS = (None, "numpy", "numba", "cupy")
METHODS = ("auto", "replay", "compiled")
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def check_choice(backend, method):
    """Reject unknown names early, at transform time."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {BACKENDS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}")
    if backend == "cupy" and method == "replay":
        raise ValueError("method='replay' is the Numba tape interpreter; backend='cupy' runs "
                         "compiled CUDA kernels: use method='auto' or 'compiled'")
    if backend == "numpy" and method != "auto":
        raise ValueError(f"method={method!r} chooses between the Numba/CuPy executors; "
                         "backend='numpy' is the reference interpreter and has one method, 'auto'")


def resolve(backend, xp) -> str:
    """The back end that runs: ``backend``, or the best one for the inputs' array kind."""
    if backend is None:
        if xp.__name__ == "cupy":
            backend = "cupy"
        else:
            backend = "numba" if HAVE_NUMBA else "numpy"
    if backend == "numba" and not HAVE_NUMBA:
        raise BackendUnavailableError("backend='numba' needs Numba: pip install numba")
    if backend == "cupy":
        from . import cupy_exec
        if not cupy_exec.available():
            raise BackendUnavailableError(
                "backend='cupy' needs CuPy and a CUDA device (pip install batchdiff[cupy]); "
                "on the CPU use backend='numba' with NumPy arrays")
        return backend
    if xp.__name__ == "cupy":
        raise BackendUnavailableError(
            f"backend={backend!r} runs on the CPU; convert CuPy inputs with cupy.asnumpy(...)")
    return backend


def empty(name, xp, width, batch_size, dtype, contiguous=False):
    """A new output leaf ``(batch_size, width)`` in the layout back end ``name`` writes best.

    CPU back ends write C-contiguous rows (a point's outputs side by side); the GPU
    writes batch-fastest (a warp's stores coalesce), so its leaves are transposed views,
    unless ``contiguous`` asks for C order (sparse values, whose rows are the CSR data).
    """
    if name == "cupy" and xp.__name__ == "cupy":
        from . import cupy_exec
        return cupy_exec.empty(width, batch_size, dtype, batch_fastest=not contiguous)
    return xp.empty((batch_size, width), dtype=dtype)


def execute(tape, blocks, batch, outs, name, method, fresh=True):
    """Run ``tape`` on the batch with back end ``name``, writing into the leaves ``outs``.

    ``outs`` are 2-D arrays ``(B, w_j)`` of the batch's array kind; their columns,
    concatenated, are the tape's outputs in order. ``fresh``: they were allocated for
    this call (the caller gave no ``out=``), which matters to timing.
    """
    if name == "numpy":
        evaluate(tape, blocks, batch.size, batch.dtype, outs=outs)
    elif name == "cupy":
        from . import cupy_exec
        if batch.xp.__name__ == "cupy":
            cupy_exec.execute(tape, blocks, batch.size, batch.dtype, outs, method)
        else:                   # NumPy in, NumPy out: the kernel writes device leaves
            device = [cupy_exec.empty(o.shape[1], batch.size, batch.dtype, batch_fastest=False)
                      for o in outs]
            cupy_exec.execute(tape, blocks, batch.size, batch.dtype, device, method)
            for o, d in zip(outs, device):
                d.get(out=o)        # both C-contiguous: one copy, no host temporary
    else:
        from . import numba_exec
        numba_exec.execute(tape, blocks, batch.size, batch.dtype, outs, method, fresh)


def source(tape, blocks, batch, backend, widths=None):
    """Generated kernel source for ``tape`` on ``backend`` (input ``blocks``, extras included).

    ``widths`` are the result leaves' column counts (one leaf of every output if None).
    """
    from . import layout
    sources = tuple(layout.sources_of(blocks, batch.size))
    widths = tuple(widths) if widths is not None else (len(tape.outputs),)
    if backend == "numba":
        from . import numba_exec
        return numba_exec.source(tape, batch.dtype, sources, widths)
    if backend == "cupy":
        from . import cupy_exec
        return cupy_exec.source(tape, batch.dtype, sources, widths)
    raise BackendUnavailableError(
        f"no kernel source for backend={backend!r}: the 'numpy' reference interpreter "
        "generates none (print the tape instead)")
