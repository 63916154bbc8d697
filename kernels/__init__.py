"""Back ends: the executors that run a tape over a batch, and the registry choosing one.

``backend="numpy"`` is the reference interpreter (``batchdiff.interpreter``). The
Numba executors (tape replay and compiled kernels) and the CuPy executor plug in here.
"""
from __future__ import annotations

from batchdiff.errors import BackendUnavailableError
from batchdiff.interpreter import evaluate

BACKENDS = (None, "numpy", "numba", "cupy")
METHODS = ("auto", "replay", "compiled")
AVAILABLE = {"numpy": evaluate}


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
        backend = "cupy" if xp.__name__ == "cupy" else "numpy"
    if backend not in AVAILABLE:
        raise BackendUnavailableError(
            f"backend={backend!r} is not available in this version of batchdiff; "
            "use backend='numpy' (the reference interpreter) with NumPy arrays")
    return backend


def execute(tape, blocks, batch, backend, method):
    """Run ``tape`` on the batch; returns the ``(B, n_outputs)`` array of outputs."""
    name = resolve(backend, batch.xp)
    return AVAILABLE[name](tape, blocks, batch.size, batch.dtype)


def source(tape, backend):
    """Generated kernel source for ``tape`` on ``backend``."""
    raise BackendUnavailableError(
        f"no kernel source for backend={backend!r}: this version runs tapes with the NumPy "
        "reference interpreter only, which generates no source (print the tape instead)")
