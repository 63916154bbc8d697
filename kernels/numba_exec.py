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
over the calls with this tape, or ``COMPILE_MIN_CALLS`` calls; or, for a longer tape, once replay has spent on it as
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
# or that many calls, however small: a compiled kernel's call costs a few microseconds
# less than replay's, which is most of a call on one point (SciPy's solvers' calls)
COMPILE_MIN_CALLS = 1000
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

RECHECK_SECONDS = 0.25       # how often a call looks on disk for a kernel not yet ready

# One kernel call at a time: the fork-safe threading layer (workqueue, chosen in
# cache._prepare_numba) aborts the process on parallel calls from two threads at once.
_launch = threading.Lock()
_warned: set = set()     # cache directories whose CacheWarning was given
_DTYPE_NAMES: dict = {}


def dtype_name(dtype) -> str:
    """``np.dtype(dtype).name``, memoised: NumPy builds the name anew at every call."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = np.dtype(dtype).name
    return name


class Entry:
    """What this process knows about running one tape in one dtype, input layout and leaf
    widths (its ``key``): every call with that key reads and updates this one object.

    ``seen``, ``calls``: points and calls run so far; ``wanted``: its compiled kernel is worth having (for
    good: its marker may yet prove false, ``cache.NotReady``); ``race``: replay against
    the compiled kernel, once both are ready (``_Race``); ``point_seconds``: by executor,
    the fastest serial seconds per point seen (``_parallel``); ``replay_ready`` and
    ``compiled_ready``: what the last look found; ``recheck_at``: when to look again
    for what was not ready (a look is a file system call: one per call would cost more
    than a small call's kernel), sooner if ``warmup.generation`` has moved on (a
    compile or load of this process ended) since ``generation``.
    """
    __slots__ = ("key", "seen", "calls", "wanted", "race", "point_seconds", "replay_ready",
                 "compiled_ready", "recheck_at", "generation", "name")

    def __init__(self, key):
        self.key, self.seen, self.calls, self.wanted, self.race = key, 0, 0, False, None
        self.point_seconds: dict = {}
        self.replay_ready = self.compiled_ready = False
        self.recheck_at, self.generation, self.name = 0.0, -1, None


_entries = bounded.LRU(bounded.MAX_TAPES)


def entry(key) -> Entry:
    """The entry of ``key`` = (tape, dtype name, input sources, leaf widths)."""
    found = _entries.get(key)
    if found is None:
        found = _entries[key] = Entry(key)
    return found


def _ready_or_start(name, dtype, source, what="", seconds=lambda: 0.0, meanwhile="") -> bool:
    """Whether ``name`` can be loaded now; if not, start compiling it in the background
    (announced, ``cache.announce_compile``, as ``what``, taking about ``seconds()``,
    while ``meanwhile`` answers).

    ``source()`` gives its source, needed only to start a compile.
    """
    if cache.is_ready(name, dtype):
        return True
    if warmup.enabled():
        warmup.start(name, dtype, source)
        cache.announce_compile(name, what, seconds(), meanwhile)
        return False
    return True          # no background compiles: compile in this process when needed


def _warn_once(error: CacheError):
    """One ``CacheWarning`` per unusable cache directory: auto goes on without it."""
    if error.directory in _warned:
        return
    _warned.add(error.directory)
    warnings.warn(f"{error} Until then method='auto' runs what is loaded in this process, "
                  "or the NumPy interpreter.", CacheWarning, stacklevel=cache.user_stacklevel())


class _Race:
    """Per-point times of replay and compiled kernels on one tape's real calls.

    Straight-line compiled code is fastest for wide tapes, but on a deep chain of
    dependent ops it waits on each op's latency, where replay (one op over a block of
    points at a time) keeps the pipelines full and can be twice as fast. So once both
    are ready, each executor is timed until it has ``SAMPLES`` timings, and the faster
    one runs from then on. Each is judged by its fastest run: noise (a first call
    loading code) only ever adds time. A call of at least ``SLICED_POINTS`` points
    times both on a slice of ``MIN_POINTS`` points each (``_race_slices``) and runs
    the rest on the one ahead, so a user's large call never runs on the slower one
    just to time it; smaller calls alternate, and calls below ``MIN_POINTS`` run the
    compiled kernel, whose call costs less.

    Calls that write fresh memory (a result allocated for the call: every store
    page-faults) and calls that write a reused ``out=`` buffer are timed apart, as
    classes: an executor timed only on reused buffers would beat one timed only on
    fresh ones whatever their speed. The first class in which both executors have
    their samples decides.
    """
    SAMPLES = 3
    MIN_POINTS = 4096        # smaller calls are not timed: overheads would decide
    SLICED_POINTS = 4 * MIN_POINTS

    def __init__(self):
        self.times = {fresh: {"replay": [], "compiled": []} for fresh in (True, False)}
        self.winner = None
        self.compiled_first = False      # which executor times its slice first: in turn

    def leader(self, fresh: bool = True) -> str:
        """The executor ahead so far: the compiled kernel unless replay has run faster
        (until both are timed, the kernel made for the tape is the better bet: replay
        wins on deep chains only, and loses several-fold on wide tapes)."""
        if self.winner is not None:
            return self.winner
        times = self.times[fresh]
        if times["replay"] and times["compiled"] and min(times["replay"]) < min(
                times["compiled"]):
            return "replay"
        return "compiled"

    def pick(self, fresh: bool = True, batch_size: int | None = None) -> str:
        if self.winner is not None:
            return self.winner
        if batch_size is not None and batch_size < self.MIN_POINTS:
            return "compiled"    # a call too small to time: the cheaper call to make
        times = self.times[fresh]
        return min(times, key=lambda m: len(times[m]))

    def record(self, method, seconds, batch_size, fresh: bool = True):
        if self.winner is not None or batch_size < self.MIN_POINTS:
            return
        times = self.times[fresh]
        times[method].append(seconds / batch_size)
        if all(len(t) >= self.SAMPLES for t in times.values()):
            self.winner = min(times, key=lambda m: min(times[m]))


def _parallel(state, how, batch_size) -> bool:
    """Whether to run this call in parallel over points (see ``PARALLEL_MIN_SECONDS``)."""
    per_point = state.point_seconds.get(how)
    if per_point is None:
        return batch_size >= PARALLEL_MIN_POINTS
    return batch_size * per_point >= PARALLEL_MIN_SECONDS


def _timed(state, how, batch_size, seconds, parallel):
    """Learn a tape's serial time per point from a call: a serial one, or a parallel one
    (its time on all threads: its start is then small beside the work)."""
    if batch_size < TIMED_MIN_POINTS:
        return
    if parallel:
        import numba
        seconds *= numba.get_num_threads()
    per_point = seconds / batch_size
    known = state.point_seconds.get(how)
    if known is None or per_point < known:
        state.point_seconds[how] = per_point


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
    _wait_for_loading()
    widths = (len(tape.outputs),) if widths is None else tuple(widths)
    return _choose(entry((tape, dtype_name(dtype), sources, widths)), batch_size, fresh)


def _wait_for_loading():
    """Wait for kernels loading in a thread (``warmup.preload``), to use them, where
    nothing is loaded yet in this process (else the call runs what is loaded).

    Running the call on the NumPy interpreter meanwhile would not wait, but the
    interpreter's calls take the GIL from the loader, which then finishes several
    times later: in a loop of the 2-link arm's Jacobian (B = 10^5, warm cache, a fresh
    process) 18 of the first 20 calls ran on NumPy, where waiting costs the second
    call 0.3 s once and the rest run the kernel (``benchmarks/results/call_sequence.md``
    has the calls as they are)."""
    if warmup.preloading() and not cache.any_built():
        warmup.wait_preload()


def _choose(state, batch_size, fresh) -> str:
    """``choose`` for the entry of this call's key."""
    if state.race is not None:
        return state.race.pick(fresh, batch_size)
    tape, name_of_dtype, sources, widths = state.key
    dtype = np.dtype(name_of_dtype)
    state.seen += batch_size
    state.calls += 1
    now = time.monotonic()
    if state.name is not None and not state.wanted and _worth_compiling(state, now):
        state.wanted, state.recheck_at = True, 0.0        # look for it now
    if now >= state.recheck_at or state.generation != warmup.generation:
        _look(state, tape, dtype, sources, widths, now)
    replay_ready, compiled_ready = state.replay_ready, state.compiled_ready
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
        if not numba_replay.is_loaded(dtype):      # race once it is loaded, in a thread
            warmup.preload(lambda: numba_replay.interpreter(dtype, wait=False))
            return "compiled"
        state.race = _Race()
        return state.race.pick(fresh, batch_size)
    return "replay" if replay_ready else "numpy"


def _look(state, tape, dtype, sources, widths, now):
    """What of the replay interpreter and the compiled kernel is loaded or on disk (and,
    for what is missing but wanted, start its compile); the next look is due in
    ``RECHECK_SECONDS`` unless both are ready or a background compile ends first."""
    state.generation = warmup.generation
    try:
        state.replay_ready = numba_replay.is_loaded(dtype) or _ready_or_start(
            numba_replay.module_name(), dtype, numba_replay.replay_source,
            numba_replay.WHAT, lambda: numba_replay.COMPILE_SECONDS, "the NumPy interpreter")
        state.compiled_ready = numba_compiled.is_loaded(state.key)
        if not state.compiled_ready:
            if state.name is None:
                state.name = numba_compiled.module_name(tape, dtype, sources, widths)
            if not state.wanted and _worth_compiling(state, now, disk=True):
                state.wanted = True
            state.compiled_ready = state.wanted and _ready_or_start(
                state.name, dtype, lambda: numba_compiled.print_kernel(tape, dtype, sources,
                                                                       widths),
                f"the kernel of a tape of {tape.num_ops:,} instructions",
                lambda: numba_compiled.compile_seconds(tape, widths),
                "replay" if state.replay_ready else "the NumPy interpreter")
    except CacheError as e:          # what is loaded runs without the disk
        _warn_once(e)
        state.replay_ready = numba_replay.is_loaded(dtype)
        state.compiled_ready = numba_compiled.is_loaded(state.key)
    ready = state.replay_ready and state.compiled_ready
    state.recheck_at = float("inf") if ready else now + RECHECK_SECONDS


def _worth_compiling(state, now, disk=False) -> bool:
    """Whether the tape's compiled kernel is worth having: it is compiled on disk already;
    or the tape is short (``COMPILE_MAX_OPS``) and has run on ``COMPILE_MIN_POINTS``
    points; or replay has spent on it, over the points seen, as much time as the
    kernel's compile would take (then compiling costs at most what it may save: a
    long tape's kernel, minutes to compile, is had by a long job only). ``disk``:
    look for it on disk too (a file system call)."""
    tape, name_of_dtype, _, widths = state.key
    if disk and cache.is_ready(state.name, name_of_dtype):
        return True
    if tape.num_ops <= COMPILE_MAX_OPS:
        return state.seen >= COMPILE_MIN_POINTS or state.calls >= COMPILE_MIN_CALLS
    per_point = state.point_seconds.get("replay")
    return per_point is not None and state.seen * per_point >= numba_compiled.compile_seconds(
        tape, widths)


def _quicker_on_numpy(tape, batch_size) -> bool:
    """Whether this call, in a process that has loaded no kernel yet, should run on NumPy
    while the kernels load in the background (``warmup.preload``)."""
    return (not cache.any_built() and warmup.enabled()
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
    sources = _sources_of(blocks, batch_size)
    widths = tuple(o.shape[1] for o in outs)
    state = entry((tape, dtype_name(dtype), sources, widths))
    if method == "auto":
        _wait_for_loading()
        how = _choose(state, batch_size, fresh)
    else:
        how = method
    done = 0                           # points run on slices to time the executors
    for _ in range(3):
        if how == "numpy":
            break
        try:
            race = state.race if method == "auto" else None
            if race is not None and race.winner is None and batch_size >= race.SLICED_POINTS:
                done = _race_slices(state, race, X, S, outs, fresh)
                how = race.leader(fresh)
            rest = batch_size - done
            parallel = _parallel(state, how, rest)
            module, loaded = _loaded(state, how, dtype)
            # auto never waits for a compiler unless background compiles are off
            wait = method != "auto" or (not loaded and not warmup.enabled())
            elapsed = _run(how, state.key, X[done:] if done else X, S,
                           [o[done:] for o in outs] if done else outs, parallel, wait, module)
            if loaded:                 # a call that loaded its kernel is no timing
                _timed(state, how, rest, elapsed, parallel)
            break
        except cache.NotReady:     # not compiled after all: the next look starts its compile
            state.race, state.compiled_ready, state.recheck_at = None, False, 0.0
            how = _choose(state, batch_size, fresh) if method == "auto" else method
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
    if method == "auto" and state.race is not None and not done:
        state.race.record(how, elapsed, batch_size, fresh)
    warmup.start_preload()            # what this call found to load, after it


def _race_slices(state, race, X, S, outs, fresh) -> int:
    """Run replay and the compiled kernel on ``race.MIN_POINTS`` points each, serially,
    in turn (which goes first alternates), each writing its own rows of ``outs``, and
    record their times; the points done. An executor loaded from disk by its slice is
    not timed by it; one not compiled on disk raises ``cache.NotReady``, unless
    background compiles are off (then it is compiled here, as every executor is)."""
    n = race.MIN_POINTS
    wait = not warmup.enabled()
    order = ("compiled", "replay") if race.compiled_first else ("replay", "compiled")
    race.compiled_first = not race.compiled_first
    for k, how in enumerate(order):
        module, loaded = _loaded(state, how, X.dtype)
        part = slice(k * n, (k + 1) * n)
        elapsed = _run(how, state.key, X[part], S, [o[part] for o in outs], False, wait,
                       module)
        if loaded:
            race.record(how, elapsed, n, fresh)
    return 2 * n


def _loaded(state, how, dtype):
    """(the compiled kernel's module or None, whether ``how`` is loaded in this process)."""
    if how == "compiled":
        module = numba_compiled.loaded(state.key)
        return module, module is not None
    return None, numba_replay.is_loaded(dtype)


_sources = bounded.LRU(bounded.MAX_TAPES)


def _sources_of(blocks, batch_size) -> tuple:
    """``layout.sources_of`` as a tuple, memoised by the blocks' widths and sharing."""
    shape = tuple((b.shape[1], b.shape[0] == 1 and batch_size != 1) for b in blocks)
    found = _sources.get(shape)
    if found is None:
        found = _sources[shape] = tuple(layout.sources_of(blocks, batch_size))
    return found


def _run(how, key, X, S, outs, parallel, wait, module=None) -> float:
    """Run the "compiled" or "replay" executor for entry ``key``; the seconds it took.
    ``module``: the compiled kernel's module, if the caller has it."""
    tape, name_of_dtype, sources, widths = key
    with _launch:
        start = time.perf_counter()
        if how == "compiled":
            if module is None:
                module = numba_compiled.kernel_module(tape, np.dtype(name_of_dtype), sources,
                                                      widths, wait)
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
