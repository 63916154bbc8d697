"""Compiling Numba kernels in a background process, so that no call waits for a compile.

With ``method="auto"``, a kernel that is neither loaded nor compiled on disk is
compiled by a separate Python process (``python -m batchdiff.kernels.warmup NAME
DTYPE``) on another core, while calls go on with what is ready (the replay
interpreter, or the NumPy interpreter on a machine where nothing is compiled yet).
The process builds the kernel with ``cache.load``, which leaves a marker file beside
the module when the machine code is on disk; the next call loads it from there.

No process is started while another process holds the kernel's compile lock (it is
compiling it already), and a kernel whose compiler failed is tried again only once.

In a fresh process with a warm cache, loading the first kernel costs more than most
small calls: importing Numba and starting LLVM to load cached machine code
(``LOAD_SECONDS``). So a call that the NumPy interpreter finishes sooner than that
(``numpy_seconds``)
runs there, while a thread loads the kernels from disk (``preload``) for the calls
that follow.

``BATCHDIFF_BACKGROUND_COMPILE=0`` turns both off: kernels are then compiled or loaded
in the calling process when first needed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np

from . import bounded, cache

ATTEMPTS = 2             # background compiles of one kernel, before calls stop asking
# Loading the first kernel of a process (Numba, LLVM, cached machine code), in seconds
# (the asv benchmark bench_coldstart times a first call; docs/performance.md, "Start-up");
# a call the NumPy interpreter is expected to finish sooner runs there while the kernels
# load in a thread.
LOAD_SECONDS = 0.25
# The NumPy interpreter's time per point at 10^5 points on the project's 2-core machine:
# about 1 ns per instruction and 7 ns per output (each output is one more strided copy);
# the estimate is compared with the measured time on the benchmark problems by
# python benchmarks/numpy_interpreter.py (benchmarks/results/numpy_interpreter.md).
NUMPY_SECONDS_PER_OP = 1e-9
NUMPY_SECONDS_PER_OUTPUT = 7e-9
# A block's multiply-add in a matrix product (BLAS), per point: a fraction of an
# instruction's time (python benchmarks/block_sweep.py times the NumPy interpreter on
# tanh networks).
NUMPY_SECONDS_PER_PRODUCT = 5e-11

# Incremented when compiles or loads of this process may have ended (``wait``, the end of
# a preload): callers that remember what was ready look again (``numba_exec.Entry``).
generation = 0
_processes = bounded.LRU(bounded.MAX_TAPES)  # (name, dtype) -> latest compiler started
_failures = bounded.LRU(bounded.MAX_TAPES)   # (name, dtype) -> compilers that failed
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("BATCHDIFF_BACKGROUND_COMPILE", "1") != "0"


def start(name: str, dtype, source):
    """Compile module ``name`` for ``dtype`` in the background, unless that is under way.

    ``source()`` gives the module's source; it is written to the cache directory first
    (it may have been written to another one: ``BATCHDIFF_CACHE_DIR`` can change).
    """
    key = (name, np.dtype(dtype).name)
    with _lock:
        proc = _processes.get(key)
        if proc is not None:
            if proc.poll() is None:
                return
            del _processes[key]
            if proc.returncode != 0:
                _failures[key] = _failures.get(key, 0) + 1
        if _failures.get(key, 0) >= ATTEMPTS or cache.compiling_elsewhere(name):
            return
        cache.store(source(), name.rsplit("_", 1)[0])
        _processes[key] = subprocess.Popen(
            [sys.executable, "-m", "batchdiff.kernels.warmup", name, key[1]],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait():
    """Wait for every background compilation and load started by this process (for
    tests, benchmarks)."""
    global generation
    for proc in list(_processes.values()):
        proc.wait()
    wait_preload()
    generation += 1


def numpy_seconds(tape, batch_size) -> float:
    """The NumPy interpreter's expected time for ``tape`` on ``batch_size`` points."""
    elements, products = tape.work
    return batch_size * (NUMPY_SECONDS_PER_OP * elements + NUMPY_SECONDS_PER_PRODUCT * products
                         + NUMPY_SECONDS_PER_OUTPUT * len(tape.outputs))


_loader = None     # the thread loading kernels, started or still to start


def preload(*loads):
    """Get the calls ``loads`` (each loads kernels from disk) ready to run in one thread.

    ``start_preload`` starts it, once the call that asked has run: the loads hold the GIL
    much of the time and would slow that call's NumPy interpreter several-fold. Nothing
    is prepared while an earlier preload is pending or running. A load that fails (not
    compiled after all, an unusable cache) is left to the call that next needs it, or
    to the next preload.
    """
    global _loader
    with _lock:
        if preloading():
            return

        def run():
            global generation
            for load in loads:
                try:
                    load()
                except Exception:      # noqa: BLE001  (the next call meets it itself)
                    pass
            generation += 1
        _loader = threading.Thread(target=run, name="batchdiff-preload", daemon=True)


def start_preload():
    """Start the preload thread ``preload`` prepared, if any."""
    with _lock:
        if _loader is not None and _loader.ident is None:
            _loader.start()


def preloading() -> bool:
    """Whether a preload is prepared or running (not finished)."""
    loader = _loader
    return loader is not None and (loader.ident is None or loader.is_alive())


def wait_preload():
    """Wait for the preload thread; a prepared one not started yet is started first."""
    start_preload()
    loader = _loader
    if loader is not None:
        loader.join()


def _before_fork():
    # a fork while the loader is inside LLVM would leave LLVM's locks held in the child
    loader = _loader
    if loader is not None and loader.ident is not None:
        loader.join()


def compile_module(name: str, dtype):
    """Load module ``name`` from the cache directory and build its entry points for ``dtype``."""
    from . import numba_compiled, numba_replay
    with open(os.path.join(cache.cache_dir(), name + ".py"), "rb") as f:
        source = f.read().decode()
    prefix = name.rsplit("_", 1)[0]
    if cache.module_name(source, prefix) != name:
        raise SystemExit(f"{name}.py does not hold its source (rewritten meanwhile?)")
    executor = numba_replay if prefix == numba_replay.PREFIX else numba_compiled
    cache.load(source, prefix, dtype, executor.compile_for)


def _after_fork():
    # the parent's compilers are not this process's children, and its lock may be held
    global _lock, _loader
    _lock = threading.Lock()
    _loader = None
    _processes.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork)


if __name__ == "__main__":
    compile_module(sys.argv[1], sys.argv[2])
