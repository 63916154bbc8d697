"""Running tapes on CPU cores with Numba: choosing the executor for each call.

``method="auto"`` takes the fastest executor that is ready, and gets the better ones
ready without making a call wait (``warmup``):

1. the compiled kernel of this tape or the replay interpreter, if both are loaded or
   compiled on disk: whichever ran faster on this tape's first calls (``_Race``);
2. the replay interpreter, if it is loaded or compiled on disk (once per machine);
3. the NumPy reference interpreter, on a machine where nothing is compiled yet.

The replay interpreter is compiled in the background the first time it is missing.
A compiled kernel is worth its compile time (about 3 ms per op, once, cached on disk)
when the tape is small enough (``COMPILE_MAX_OPS``) and the work is large: a batch of
``COMPILE_MIN_POINTS`` points, or that many summed over the calls with this tape;
then it is compiled in the background while replay serves the calls. The constants
were chosen from ``benchmarks/compare.py`` and the asv suite (README, "Choosing the
executor").
"""
from __future__ import annotations

import threading
import time

import numpy as np

from batchdiff.interpreter import evaluate

from . import layout, numba_compiled, numba_replay, warmup

COMPILE_MAX_OPS = 3000
COMPILE_MIN_POINTS = 200_000
PARALLEL_MIN_POINTS = 2048

# Numba's default threading layer aborts on concurrent parallel calls from threads.
_launch = threading.Lock()
_points_seen: dict = {}


def _ready_or_start(name, dtype) -> bool:
    """Whether ``name`` can be loaded now; if not, start compiling it in the background."""
    if warmup.is_ready(name, dtype):
        return True
    if warmup.enabled():
        warmup.start(name, dtype)
        return False
    return True          # no background compiles: compile in this process when needed


class _Race:
    """Per-point times of replay and compiled kernels on one tape's real calls.

    Straight-line compiled code is fastest for wide tapes, but on a deep chain of
    dependent ops it waits on each op's latency, where replay (one op over a block of
    points at a time) keeps the pipelines full and can be twice as fast. So once both
    are ready, calls alternate until each executor has ``SAMPLES`` timings, and the
    faster one runs from then on. Each is judged by its fastest call: noise (a first
    call loading code) only ever adds time.

    Calls that write fresh memory (a result allocated for the call: every store
    page-faults) and calls that write a reused ``out=`` buffer are timed apart, as
    classes: an executor timed only on reused buffers would beat one timed only on
    fresh ones whatever their speed. The first class in which both executors have
    their samples decides.
    """
    SAMPLES = 3
    MIN_POINTS = 4096        # smaller calls are not timed: overheads would decide

    def __init__(self):
        self.times = {fresh: {"replay": [], "compiled": []} for fresh in (True, False)}
        self.winner = None

    def pick(self, fresh: bool = True) -> str:
        if self.winner is not None:
            return self.winner
        times = self.times[fresh]
        return min(times, key=lambda m: len(times[m]))

    def record(self, method, seconds, batch_size, fresh: bool = True):
        if self.winner is not None or batch_size < self.MIN_POINTS:
            return
        times = self.times[fresh]
        times[method].append(seconds / batch_size)
        if all(len(t) >= self.SAMPLES for t in times.values()):
            self.winner = min(times, key=lambda m: min(times[m]))


_races: dict = {}


def choose(tape, batch_size, dtype, sources, method="auto", widths=None, fresh=True) -> str:
    """"compiled", "replay" or "numpy" for this call (``method`` other than "auto" forces one).

    ``fresh``: whether the call writes newly allocated outputs (see ``_Race``).
    """
    if method != "auto":
        return method
    widths = (len(tape.outputs),) if widths is None else tuple(widths)
    key = (tape, str(dtype), sources, widths)
    race = _races.get(key)
    if race is not None:
        return race.pick(fresh)
    seen = _points_seen.get(key, 0) + batch_size
    _points_seen[key] = seen
    replay_ready = numba_replay.is_loaded(dtype) or _ready_or_start(
        numba_replay.module_name(), dtype)
    if tape.num_ops <= COMPILE_MAX_OPS and (
            numba_compiled.is_loaded(key) or seen >= COMPILE_MIN_POINTS
            or warmup.is_ready(numba_compiled.module_name(tape, dtype, sources, widths), dtype)):
        if _ready_or_start(numba_compiled.module_name(tape, dtype, sources, widths), dtype):
            if not replay_ready:
                return "compiled"
            race = _races[key] = _Race()
            return race.pick(fresh)
    return "replay" if replay_ready else "numpy"


def execute(tape, blocks, batch_size, dtype, outs, method="auto", fresh=True):
    """Run ``tape`` over the batch on CPU cores, writing into ``outs``.

    ``outs`` are C-contiguous ``(B, w_j)`` arrays whose columns, concatenated, are the
    tape's outputs; ``fresh`` says whether they were allocated for this call.
    """
    dtype = np.dtype(dtype)
    if batch_size == 0:
        return
    X, S = layout.pack_inputs(blocks, batch_size, dtype)
    sources = tuple(layout.sources_of(blocks, batch_size))
    widths = tuple(o.shape[1] for o in outs)
    parallel = batch_size >= PARALLEL_MIN_POINTS
    how = choose(tape, batch_size, dtype, sources, method, widths, fresh)
    if how == "numpy":
        evaluate(tape, blocks, batch_size, dtype, outs=outs)
        return
    with _launch:
        start = time.perf_counter()
        if how == "compiled":
            module = numba_compiled.kernel_module(tape, dtype, sources, widths)
            numba_compiled.run(module, X, S, outs, parallel)
        else:
            numba_replay.run(tape, sources, X, S, outs, parallel)
        elapsed = time.perf_counter() - start
    race = _races.get((tape, str(dtype), sources, widths)) if method == "auto" else None
    if race is not None:
        race.record(how, elapsed, batch_size, fresh)


def source(tape, dtype, sources, widths=None) -> str:
    return numba_compiled.print_kernel(tape, dtype, sources, widths)
