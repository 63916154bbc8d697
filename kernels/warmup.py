"""Compiling Numba kernels in a background process, so that no call waits for a compile.

With ``method="auto"``, a kernel that is neither loaded nor compiled on disk is
compiled by a separate Python process (``python -m batchdiff.kernels.warmup NAME
DTYPE``) on another core, while calls go on with what is ready (the replay
interpreter, or the NumPy interpreter on a machine where nothing is compiled yet).
When the process is done it leaves a marker file beside the module; the next call
loads the kernel from the disk cache.

``BATCHDIFF_BACKGROUND_COMPILE=0`` turns this off: kernels are then compiled in the
calling process when first needed.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from . import cache

_processes: dict = {}


def enabled() -> bool:
    return os.environ.get("BATCHDIFF_BACKGROUND_COMPILE", "1") != "0"


def _marker(name: str, dtype) -> str:
    return os.path.join(cache.cache_dir(), f"{name}.{np.dtype(dtype).name}.ready")


def is_ready(name: str, dtype) -> bool:
    """Whether kernel module ``name`` is compiled on disk for ``dtype``."""
    return os.path.exists(_marker(name, dtype))


def mark_ready(name: str, dtype):
    cache.write_atomic(_marker(name, dtype), "")


def start(name: str, dtype):
    """Compile module ``name`` (already in the cache directory) for ``dtype``, in the background."""
    key = (name, np.dtype(dtype).name)
    proc = _processes.get(key)
    if proc is not None and proc.poll() is None:
        return
    _processes[key] = subprocess.Popen(
        [sys.executable, "-m", "batchdiff.kernels.warmup", name, np.dtype(dtype).name],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait():
    """Wait for every background compilation started by this process (for tests, benchmarks)."""
    for proc in list(_processes.values()):
        proc.wait()


def compile_module(name: str, dtype):
    """Load module ``name`` from the cache directory and compile its entry points for ``dtype``."""
    from . import numba_compiled, numba_replay
    with open(os.path.join(cache.cache_dir(), name + ".py")) as f:
        source = f.read()
    prefix = name.rsplit("_", 1)[0]
    module = cache.load(source, prefix)
    (numba_replay if prefix == numba_replay.PREFIX else numba_compiled).compile_for(
        module, np.dtype(dtype))
    mark_ready(name, dtype)


if __name__ == "__main__":
    compile_module(sys.argv[1], sys.argv[2])
