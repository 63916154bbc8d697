"""Back ends: the executors that run a tape over a batch, and the registry choosing one.

- ``numpy``: the reference interpreter (``batchdiff.interpreter``), the spec;
- ``numba``: CPU cores, by tape replay or compiled kernels (``numba_exec``);
- ``cupy``: NVIDIA GPUs (planned).

``backend=None`` picks ``numba`` for NumPy arrays (``numpy`` where Numba is missing).
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
        raise BackendUnavailableError(
            "backend='cupy' is not available in this version of batchdiff; "
            "use backend='numba' or 'numpy' with NumPy arrays")
    if xp.__name__ == "cupy":
        raise BackendUnavailableError(
            f"backend={backend!r} runs on the CPU; convert CuPy inputs with cupy.asnumpy(...)")
    return backend


def execute(tape, blocks, batch, backend, method):
    """Run ``tape`` on the batch; returns the ``(B, n_outputs)`` array of outputs."""
    name = resolve(backend, batch.xp)
    if name == "numpy":
        return evaluate(tape, blocks, batch.size, batch.dtype)
    from . import numba_exec
    return numba_exec.execute(tape, blocks, batch.size, batch.dtype, method)


def source(tape, batch, backend):
    """Generated kernel source for ``tape`` on ``backend``."""
    if backend == "numba":
        from . import layout, numba_exec
        return numba_exec.source(tape, batch.dtype, tuple(layout.sources_of(batch.blocks,
                                                                            batch.size)))
    raise BackendUnavailableError(
        f"no kernel source for backend={backend!r}: the 'numpy' reference interpreter "
        "generates none (print the tape instead); 'cupy' is not available in this version")
