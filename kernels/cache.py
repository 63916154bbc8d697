"""The on-disk cache of generated kernel modules.

Numba cannot cache a function made by ``exec()``, so generated source is written to a
file named by the hash of its text, in the cache directory, and imported as a real
module: Numba's ``cache=True`` then keeps its machine code beside it, and a second
process loads both without compiling. Writes are atomic (a temporary file renamed into
place), so two processes writing the same kernel both end with a correct file. A file
that does not hold the expected text (truncated, edited) is rewritten; a module that
fails to load is rebuilt once with its Numba cache cleared.

The directory is ``$BATCHDIFF_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/batchdiff``
(``~/.cache/batchdiff``).
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading

_lock = threading.RLock()


def cache_dir() -> str:
    """The directory holding generated modules (created on first use)."""
    path = os.environ.get("BATCHDIFF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "batchdiff")
    os.makedirs(path, exist_ok=True)
    return path


def module_name(source: str, prefix: str) -> str:
    return f"{prefix}_{hashlib.sha256(source.encode()).hexdigest()[:24]}"


def write_atomic(path: str, text: str):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _holds(path: str, text: str) -> bool:
    try:
        with open(path) as f:
            return f.read() == text
    except OSError:
        return False


def _clear_numba_cache(name: str, directory: str):
    for f in glob.glob(os.path.join(directory, "__pycache__", f"{name}.*")):
        try:
            os.unlink(f)
        except OSError:
            pass


def evict(name: str):
    """Forget module ``name``: in this process and its Numba cache files on disk."""
    with _lock:
        sys.modules.pop(name, None)
        _clear_numba_cache(name, cache_dir())


def store(source: str, prefix: str) -> str:
    """Write ``source`` to the cache directory (if not there already); returns its module name."""
    name = module_name(source, prefix)
    path = os.path.join(cache_dir(), name + ".py")
    if not _holds(path, source):
        write_atomic(path, source)
    return name


def load(source: str, prefix: str, check=None):
    """Import generated ``source`` as a module from the cache directory.

    ``check(module)`` (optional) is run once after import, e.g. a first call that
    makes Numba load or compile the kernel; if loading or the check fails, the cached
    files are cleared and the module is built again from ``source`` once.
    """
    name = module_name(source, prefix)
    with _lock:
        module = sys.modules.get(name)
        if module is not None:
            return module
        directory = cache_dir()
        path = os.path.join(directory, name + ".py")
        for attempt in (0, 1):
            if attempt or not _holds(path, source):
                _clear_numba_cache(name, directory)
                write_atomic(path, source)
            try:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                if check is not None:
                    check(module)
                return module
            except Exception:
                sys.modules.pop(name, None)
                if attempt:
                    raise
        raise AssertionError("unreachable")
