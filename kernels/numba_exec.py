"""Running tapes on CPU cores with Numba: choosing between replay and compiled kernels.

``method="auto"`` replays the tape with the generic interpreter (no compilation) and
switches to a compiled kernel where that pays:

- the kernel is already compiled, in this process or in the disk cache; or
- the tape is small enough to compile quickly (``COMPILE_MAX_OPS``) and the work is
  large: a batch of at least ``COMPILE_MIN_POINTS`` points, or that many points
  summed over the calls made so far with this tape.

The constants come from ``benchmarks/crossover.py`` (see the README): a compiled kernel
costs about 3 ms of compile time per op, once, and is 1.5-3x faster per point than
replay, so it repays its compile after a few million point-ops.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from . import cache, layout, numba_compiled, numba_replay

COMPILE_MAX_OPS = 3000
COMPILE_MIN_POINTS = 200_000
PARALLEL_MIN_POINTS = 2048

# Numba's default threading layer aborts on concurrent parallel calls from threads.
_launch = threading.Lock()
_points_seen: dict = {}


def _compiled_on_disk(tape, dtype, sources) -> bool:
    name = cache.module_name(numba_compiled.print_kernel(tape, dtype, sources), "bdk")
    pycache = os.path.join(cache.cache_dir(), "__pycache__")
    try:
        return any(f.startswith(name) and f.endswith(".nbi") for f in os.listdir(pycache))
    except OSError:
        return False


def choose(tape, batch_size, dtype, sources, method="auto") -> str:
    """"replay" or "compiled" for this call (``method`` forces one)."""
    if method != "auto":
        return method
    key = (tape, str(dtype), sources)
    if numba_compiled.is_loaded(key):
        return "compiled"
    seen = _points_seen.get(key, 0) + batch_size
    _points_seen[key] = seen
    if tape.num_ops > COMPILE_MAX_OPS:
        return "replay"
    if seen >= COMPILE_MIN_POINTS or _compiled_on_disk(tape, dtype, sources):
        return "compiled"
    return "replay"


def execute(tape, blocks, batch_size, dtype, method="auto") -> np.ndarray:
    """Run ``tape`` over the batch on CPU cores; returns ``(B, n_outputs)``."""
    dtype = np.dtype(dtype)
    out = np.empty((batch_size, len(tape.outputs)), dtype=dtype)
    if batch_size == 0:
        return out
    X, S = layout.pack_inputs(blocks, batch_size, dtype)
    sources = tuple(layout.sources_of(blocks, batch_size))
    parallel = batch_size >= PARALLEL_MIN_POINTS
    how = choose(tape, batch_size, dtype, sources, method)
    with _launch:
        if how == "compiled":
            module = numba_compiled.kernel_module(tape, dtype, sources)
            numba_compiled.run(module, X, S, out, parallel)
        else:
            numba_replay.run(tape, sources, X, S, out, parallel)
    return out


def source(tape, dtype, sources) -> str:
    return numba_compiled.print_kernel(tape, dtype, sources)
