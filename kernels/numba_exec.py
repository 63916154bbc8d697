"""Running tapes on CPU cores with Numba: choosing the executor for each call.

``method="auto"`` takes the fastest executor that is ready, and gets the better ones
ready without making a call wait (``warmup``):

1. the compiled kernel of this tape or the replay interpreter, if both are loaded or
   compiled on disk: whichever ran faster on this tape's first calls (``_Race``);
2. the replay interpreter, if it is loaded or compiled on disk (once per machine);
3. the NumPy reference interpreter, on a machine where nothing is compiled yet, and in
   a process that has loaded no kernel yet for a call it finishes sooner than loading
   one takes (importing Numba, starting LLVM): the kernels load in a thread meanwhile.

The replay interpreter is compiled in the background the first time it is missing.
A compiled kernel is worth its compile time (``numba_compiled.compile_seconds``, once,
cached on disk)
when it is compiled on disk already; when the tape is small enough (``COMPILE_MAX_OPS``)
and the work is large: a batch of ``COMPILE_MIN_POINTS`` points, or that many summed
over the calls with this tape; or, for a longer tape, once replay has spent on it as
much time as compiling would take (``_worth_compiling``). Then it is compiled in the
background while replay serves the calls. The constants were chosen from
``benchmarks/compare.py``, ``benchmarks/crossover.py`` and the asv suite
(``docs/executors.md``, "Choosing the executor").

"Compiled on disk" is only a marker file's word: auto loads a kernel without letting
Numba compile (``cache.load(wait=False)``), and a kernel whose machine code turns out
missing or corrupt drops out (``cache.NotReady``) to be compiled in the background
while the next executor serves the call. A kernel cache that cannot be used
(``CacheError``) makes auto warn once (``CacheWarning``) and go on with what is loaded
in this process, or the NumPy interpreter; "replay" and "compiled" raise it.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import warnings

import numpy as np

from batchdiff.errors import CacheError, CacheWarning
from batchdiff.interpreter import evaluate

from . import bounded, cache, layout, numba_compiled, numba_replay, warmup

SUMMARY = ("Numba kernels on CPU cores: 'replay' (one interpreter for every tape) "
           "or 'compiled' (a kernel per tape)")
INSTALL = "Numba: pip install numba"
METHODS = ("replay", "compiled")
ARRAYS = ("numpy",)

COMPILE_MAX_OPS = 3000
COMPILE_MIN_POINTS = 200_000
# Serial or parallel over points: a parallel call costs a fixed start (waking the
# threads, splitting the work) that a cheap tape's small batch does not repay. Until a
# call of a tape has been timed, its batches run in parallel from PARALLEL_MIN_POINTS
# points (smaller ones run serially, and are timed); after, when the time they would
# take serially is at least PARALLEL_MIN_SECONDS. Serial and parallel calls of compiled
# kernels break even at a fraction of a millisecond of serial work, which a cheap tape
# reaches only at tens of thousands of points (python benchmarks/parallel_crossover.py,
# benchmarks/results/parallel.md).
PARALLEL_MIN_POINTS = 32768
PARALLEL_MIN_SECONDS = 5e-4
TIMED_MIN_POINTS = 256       # smaller calls teach nothing: their overheads would decide

# One kernel call at a time: the fork-safe threading layer (workqueue, chosen in
# cache._prepare_numba) aborts the process on parallel calls from two threads at once.
_launch = threading.Lock()
_points_seen = bounded.LRU(bounded.MAX_TAPES)
_wanted = bounded.LRU(bounded.MAX_TAPES)     # tapes whose compiled kernel is worth having
_warned: set = set()     # cache directories whose CacheWarning was given


def _ready_or_start(name, dtype, source) -> bool:
    """Whether ``name`` can be loaded now; if not, start compiling it in the background.

    ``source()`` gives its source, needed only to start a compile.
    """
    if cache.is_ready(name, dtype):
        return True
    if warmup.enabled():
        warmup.start(name, dtype, source)
        return False
    return True          # no background compiles: compile in this process when needed


def _warn_once(error: CacheError):
    """One ``CacheWarning`` per unusable cache directory: auto goes on without it."""
    if error.directory in _warned:
        return
    _warned.add(error.directory)
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
            "batchdiff"):
        level, frame = level + 1, frame.f_back     # point at the user's call
    warnings.warn(f"{error} Until then method='auto' runs what is loaded in this process, "
                  "or the NumPy interpreter.", CacheWarning, stacklevel=level)


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


_races = bounded.LRU(bounded.MAX_TAPES)
_point_seconds = bounded.LRU(bounded.MAX_TAPES)   # (key, how) -> fastest serial s/point


def _parallel(key, how, batch_size) -> bool:
    """Whether to run this call in parallel over points (see ``PARALLEL_MIN_SECONDS``)."""
    per_point = _point_seconds.get((key, how))
    if per_point is None:
        return batch_size >= PARALLEL_MIN_POINTS
    return batch_size * per_point >= PARALLEL_MIN_SECONDS


def _timed(key, how, batch_size, seconds, parallel):
    """Learn a tape's serial time per point from a call: a serial one, or a parallel one
    (its time on all threads: its start is then small beside the work)."""
    if batch_size < TIMED_MIN_POINTS:
        return
    if parallel:
        import numba
        seconds *= numba.get_num_threads()
    per_point = seconds / batch_size
    known = _point_seconds.get((key, how))
    if known is None or per_point < known:
        _point_seconds[key, how] = per_point


def available() -> bool:
    return importlib.util.find_spec("numba") is not None


def run(tape, blocks, batch, outs, method="auto", fresh=True):
    """``execute`` for the registry (``kernels.execute``)."""
    execute(tape, blocks, batch.size, batch.dtype, outs, method, fresh)


def choose(tape, batch_size, dtype, sources, method="auto", widths=None, fresh=True) -> str:
    """"compiled", "replay" or "numpy" for this call (``method`` other than "auto" forces one).

    ``fresh``: whether the call writes newly allocated outputs (see ``_Race``).
    """
    if method != "auto":
        return method
    if warmup.preloading():           # kernels are loading: wait for them, then use them
        warmup.wait_preload()
    widths = (len(tape.outputs),) if widths is None else tuple(widths)
    key = (tape, str(dtype), sources, widths)
    race = _races.get(key)
    if race is not None:
        return race.pick(fresh)
    seen = _points_seen.get(key, 0) + batch_size
    _points_seen[key] = seen
    try:
        replay_ready = numba_replay.is_loaded(dtype) or _ready_or_start(
            numba_replay.module_name(), dtype, numba_replay.replay_source)
        compiled_ready = numba_compiled.is_loaded(key)
        if not compiled_ready:
            name = numba_compiled.module_name(tape, dtype, sources, widths)
            if key not in _wanted and _worth_compiling(key, tape, widths, seen, name, dtype):
                _wanted[key] = True  # for good: its marker may yet prove false (NotReady)
            compiled_ready = key in _wanted and _ready_or_start(
                name, dtype, lambda: numba_compiled.print_kernel(tape, dtype, sources, widths))
    except CacheError as e:          # what is loaded runs without the disk
        _warn_once(e)
        replay_ready = numba_replay.is_loaded(dtype)
        compiled_ready = numba_compiled.is_loaded(key)
    if (replay_ready or compiled_ready) and _quicker_on_numpy(tape, batch_size):
        loads = [lambda: numba_replay.interpreter(dtype, wait=False)] if replay_ready else []
        if compiled_ready:
            loads.append(lambda: numba_compiled.kernel_module(tape, dtype, sources, widths,
                                                              wait=False))
        warmup.preload(*loads)
        return "numpy"
    if compiled_ready:
        if not replay_ready:
            return "compiled"
        race = _races[key] = _Race()
        return race.pick(fresh)
    return "replay" if replay_ready else "numpy"


def _worth_compiling(key, tape, widths, seen, name, dtype) -> bool:
    """Whether the tape's compiled kernel is worth having: it is compiled on disk already;
    or the tape is short (``COMPILE_MAX_OPS``) and has run on ``COMPILE_MIN_POINTS``
    points; or replay has spent on it, over the ``seen`` points, as much time as the
    kernel's compile would take (then compiling costs at most what it may save: a
    long tape's kernel, minutes to compile, is had by a long job only)."""
    if cache.is_ready(name, dtype):
        return True
    if tape.num_ops <= COMPILE_MAX_OPS:
        return seen >= COMPILE_MIN_POINTS
    per_point = _point_seconds.get((key, "replay"))
    return per_point is not None and seen * per_point >= numba_compiled.compile_seconds(
        tape, widths)


def _quicker_on_numpy(tape, batch_size) -> bool:
    """Whether this call, in a process that has loaded no kernel yet, should run on NumPy
    while the kernels load in the background (``warmup.preload``)."""
    return (warmup.enabled() and not cache.any_built()
            and warmup.numpy_seconds(tape, batch_size) < warmup.LOAD_SECONDS)


def execute(tape, blocks, batch_size, dtype, outs, method="auto", fresh=True):
    """Run ``tape`` over the batch on CPU cores, writing into ``outs``.

    ``outs`` are C-contiguous ``(B, w_j)`` arrays whose columns, concatenated, are the
    tape's outputs; ``fresh`` says whether they were allocated for this call.
    """
    dtype = np.dtype(dtype)
    if batch_size == 0:
        return
    X, S = layout.pack_inputs(blocks, batch_size, dtype)
    if not X.flags.writeable:
        X = X.copy()     # Numba types a read-only array apart: it would compile for it
    sources = tuple(layout.sources_of(blocks, batch_size))
    widths = tuple(o.shape[1] for o in outs)
    key = (tape, str(dtype), sources, widths)
    # auto never waits for a compiler unless background compiles are off
    wait = method != "auto" or not warmup.enabled()
    how = choose(tape, batch_size, dtype, sources, method, widths, fresh)
    for _ in range(3):
        if how == "numpy":
            break
        try:
            parallel = _parallel(key, how, batch_size)
            loaded = (numba_replay.is_loaded(dtype) if how == "replay"
                      else numba_compiled.is_loaded(key))
            elapsed = _run(how, tape, dtype, sources, widths, X, S, outs, parallel, wait)
            if loaded:                 # a call that loaded its kernel is no timing
                _timed(key, how, batch_size, elapsed, parallel)
            break
        except cache.NotReady:     # not compiled after all: choose() starts its compile
            _races.pop(key, None)
            how = choose(tape, batch_size, dtype, sources, method, widths, fresh)
        except CacheError as e:
            if method != "auto":
                raise
            _warn_once(e)
            how = "numpy"
    else:
        how = "numpy"
    if how == "numpy":
        evaluate(tape, blocks, batch_size, dtype, outs=outs)
        warmup.start_preload()        # after the call: it would slow it (``warmup.preload``)
        return
    race = _races.get(key) if method == "auto" else None
    if race is not None:
        race.record(how, elapsed, batch_size, fresh)


def _run(how, tape, dtype, sources, widths, X, S, outs, parallel, wait) -> float:
    """Run the "compiled" or "replay" executor; the seconds it took."""
    with _launch:
        start = time.perf_counter()
        if how == "compiled":
            module = numba_compiled.kernel_module(tape, dtype, sources, widths, wait)
            numba_compiled.run(module, X, S, outs, parallel)
        else:
            numba_replay.run(tape, sources, X, S, outs, parallel, wait=wait)
        return time.perf_counter() - start


def _after_fork():
    # a call in another thread at the moment of fork leaves the lock held in the child
    global _launch
    _launch = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def source(tape, dtype, sources, widths=None) -> str:
    return numba_compiled.print_kernel(tape, dtype, sources, widths)
