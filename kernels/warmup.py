"""Compiling Numba kernels in a background process, so that no call waits for a compile.

With ``method="auto"``, a kernel that is neither loaded nor compiled on disk is
compiled by a separate Python process (``python -m batchdiff.kernels.warmup NAME
DTYPE``) on another core, while calls go on with what is ready (the replay
interpreter, or the NumPy interpreter on a machine where nothing is compiled yet).
The process builds the kernel with ``cache.load``, which leaves a marker file beside
the module when the machine code is on disk; the next call loads it from there.

No process is started while another process holds the kernel's compile lock (it is
compiling it already), and a kernel whose compiler failed is tried again only once.

``BATCHDIFF_BACKGROUND_COMPILE=0`` turns this off: kernels are then compiled in the
calling process when first needed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np

from . import bounded, cache

ATTEMPTS = 2             # background compiles of one kernel, before calls stop asking

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
    """Wait for every background compilation started by this process (for tests, benchmarks)."""
    for proc in list(_processes.values()):
        proc.wait()


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
    global _lock
    _lock = threading.Lock()
    _processes.clear()


os.register_at_fork(after_in_child=_after_fork)


if __name__ == "__main__":
    compile_module(sys.argv[1], sys.argv[2])
