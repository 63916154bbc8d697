"""The on-disk cache of generated kernel modules, and a kernel's life in a process.

Numba cannot cache a function made by ``exec()``, so generated source is written to a
file named by the hash of its text, in the cache directory, and imported as a real
module: Numba's ``cache=True`` then keeps its machine code beside it, and a second
process loads both without compiling. Writes are atomic (a temporary file renamed into
place), so two processes writing the same kernel both end with a correct file.

``load`` is the one way a kernel comes alive, for the calling process and for the
background compiler (``warmup``) alike:

1. the source is written unless the file already holds it byte for byte (a truncated,
   edited or undecodable file is rewritten, and Numba's files for it dropped);
2. the module is imported and ``build(module, dtype)`` runs each entry point once, so
   that Numba loads its machine code from disk, or compiles and saves it;
3. a marker ``NAME.DTYPE.ready`` then says the machine code is on disk.

One process compiles a module at a time: building takes the lock file ``NAME.lock``
(an OS lock, released when its holder dies, so a compiler killed with ``kill -9``
never leaves others waiting), and a process that finds it taken waits and then loads
what the other compiled. ``load(..., wait=False)`` (``method="auto"``, which never
waits for a compiler) compiles nothing: a kernel without its marker, or whose Numba
files turn out missing or corrupt, raises ``NotReady`` and loses its marker, so that
it is compiled again in the background. Anything else wrong with an entry is rebuilt once.

A cache directory that cannot be used (a file in the way, read-only, full) raises
``CacheError``, which names ``BATCHDIFF_CACHE_DIR`` and what went wrong.

The directory is ``$BATCHDIFF_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/batchdiff``
(``~/.cache/batchdiff``). ``$BATCHDIFF_COMPILE_LOG``, if set, names a file to which
every Numba compile of a generated function appends a line ``PID MODULE FUNCTION``
(the tests count compiles across processes with it).
"""
from __future__ import annotations

import contextlib
import errno
import gc
import glob
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import time

import numpy as np

from batchdiff.errors import CacheError

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 300.0     # seconds: after that a live but stuck compiler is not waited for

_lock = threading.RLock()
_built: dict = {}        # (name, dtype name) -> the module whose entry points ran here
_no_compile: set = set()  # modules being loaded by load(wait=False)
_compiles: dict = {}     # module name -> compiles of its functions in this process


LONG_COMPILE_SECONDS = 5.0    # a compile expected to take longer is announced, once
_announced: set = set()


def announce_compile(name: str, what: str, seconds: float, meanwhile: str | None = None):
    """Say once per module ``name`` that compiling ``what`` starts and takes about
    ``seconds``, if that is more than ``LONG_COMPILE_SECONDS``: a log record at INFO,
    naming what answers ``meanwhile`` (a background compile); without ``meanwhile`` the
    caller waits for it, and a ``CompileWarning`` says so too."""
    if seconds < LONG_COMPILE_SECONDS or name in _announced:
        return
    _announced.add(name)
    text = f"batchdiff is compiling {what}: estimated {seconds:.0f} s on a 2-core machine"
    if meanwhile is not None:
        log.info("%s, in the background; %s answers meanwhile", text, meanwhile)
        return
    log.info("%s; the call waits for it", text)
    import warnings
    from batchdiff.errors import CompileWarning
    why = ("BATCHDIFF_BACKGROUND_COMPILE=0 compiles in the calling process"
           if os.environ.get("BATCHDIFF_BACKGROUND_COMPILE", "1") == "0" else
           "method='auto' would answer with what is ready meanwhile and compile in the "
           "background")
    warnings.warn(f"{text}; this call waits for it ({why})", CompileWarning,
                  stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` that points at the user's call: the first
    frame, from the caller of the function warning, outside the batchdiff package."""
    level, frame = 2, sys._getframe(2)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
            "batchdiff"):
        level, frame = level + 1, frame.f_back
    return level


class NotReady(Exception):
    """The kernel is not compiled on disk, and the caller would not wait for a compile."""


def cache_dir() -> str:
    """The directory holding generated modules (created on first use)."""
    path = os.environ.get("BATCHDIFF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "batchdiff")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        action = ("creating the directory (a file is in the way)"
                  if e.errno in (errno.EEXIST, errno.ENOTDIR) else "creating the directory")
        raise _unusable(path, action, e) from e
    return path


def _unusable(path: str, action: str, error: OSError) -> CacheError:
    where = (f"BATCHDIFF_CACHE_DIR={path!r}" if os.environ.get("BATCHDIFF_CACHE_DIR")
             else f"the kernel cache {path!r} (BATCHDIFF_CACHE_DIR is not set)")
    reason = error.strerror or str(error)
    if error.errno is not None:
        reason += f" [{errno.errorcode.get(error.errno, error.errno)}]"
    error = CacheError(f"{where} cannot be used: {action} failed: {reason}. Set "
                       "BATCHDIFF_CACHE_DIR to a writable directory with free space.")
    error.directory = path
    return error


def module_name(source: str, prefix: str) -> str:
    return f"{prefix}_{hashlib.sha256(source.encode()).hexdigest()[:24]}"


def write_atomic(path: str, text: str):
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    except OSError as e:
        raise _unusable(os.path.dirname(path), "creating a file", e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _unusable(os.path.dirname(path), f"writing {os.path.basename(path)}",
                            e) from e
        raise


def _holds(path: str, text: str) -> bool:
    # compared as bytes: a file that is not valid UTF-8 is simply not the right file
    try:
        with open(path, "rb") as f:
            return f.read() == text.encode()
    except OSError:
        return False


def _clear_numba_cache(name: str, directory: str):
    for f in glob.glob(os.path.join(directory, "__pycache__", f"{name}.*")):
        with contextlib.suppress(OSError):
            os.unlink(f)


def store(source: str, prefix: str) -> str:
    """Write ``source`` to the cache directory (if not there already); returns its module name."""
    name = module_name(source, prefix)
    directory = cache_dir()
    path = os.path.join(directory, name + ".py")
    if not _holds(path, source):
        _clear_numba_cache(name, directory)      # machine code of whatever was there
        write_atomic(path, source)
    return name


def _marker(name: str, dtype) -> str:
    return os.path.join(cache_dir(), f"{name}.{np.dtype(dtype).name}.ready")


def is_ready(name: str, dtype) -> bool:
    """Whether module ``name`` is compiled on disk for ``dtype`` (by its marker)."""
    return os.path.exists(_marker(name, dtype))


def mark_ready(name: str, dtype):
    write_atomic(_marker(name, dtype), "")


def _unmark(name: str, dtype):
    path = _marker(name, dtype)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _unusable(os.path.dirname(path), f"removing {os.path.basename(path)}", e) from e


def is_built(name: str, dtype) -> bool:
    """Whether module ``name``'s entry points are loaded for ``dtype`` in this process."""
    module = _built.get((name, np.dtype(dtype).name))
    return module is not None and sys.modules.get(name) is module


def any_built() -> bool:
    """Whether this process has loaded or compiled any generated module (Numba is up)."""
    return bool(_built)


def unload(name: str):
    """Forget generated module ``name`` in this process (its files stay on disk): a later
    ``load`` imports it again. Callers that hold the module object can still run it."""
    with _lock:
        for key in [k for k in _built if k[0] == name]:
            del _built[key]
        sys.modules.pop(name, None)
        _generated.discard(name)
        _compiles.pop(name, None)


def compiles(name: str) -> int:
    """How many of module ``name``'s functions Numba compiled in this process."""
    return _compiles.get(name, 0)


def load(source: str, prefix: str, dtype, build, wait: bool = True):
    """Import generated ``source`` with its entry points loaded or compiled for ``dtype``.

    ``build(module, dtype)`` runs each entry point once (e.g. on empty arrays), which
    makes Numba load its machine code from the disk cache or compile it. ``wait=False``
    compiles nothing: it raises ``NotReady`` for a kernel that is not on disk, and
    ``CacheError`` when the directory cannot be used, as ``wait=True`` does.
    """
    dtype = np.dtype(dtype).name
    name = module_name(source, prefix)
    with _lock:
        if is_built(name, dtype):
            return _built[name, dtype]
        _prepare_numba()
        module = _load_compiled(name, source, dtype, build)
        if module is None:
            if not wait:
                raise NotReady(name)
            module = _compile(name, source, dtype, build)
        _built[name, dtype] = module
        return module


def _load_compiled(name, source, dtype, build):
    """The module built from the machine code on disk, or None (its marker dropped)."""
    if not is_ready(name, dtype):
        return None
    try:
        module = _import(name, source)
        _no_compile.add(name)
        try:
            build(module, dtype)
        finally:
            _no_compile.discard(name)
        return module
    except CacheError:
        raise
    except Exception:      # noqa: BLE001  (no cached machine code, or corrupt: compile it)
        # a later import must start afresh: Numba checks its files against the stamp of
        # the source file it saw at import, and a compiler may rewrite that file
        sys.modules.pop(name, None)
        _unmark(name, dtype)
        return None


def _compile(name, source, dtype, build):
    """Build the module under the compile lock, compiling what is not on disk."""
    with _compile_lock(name):
        if is_ready(name, dtype):            # compiled by another process meanwhile
            module = _load_compiled(name, source, dtype, build)
            if module is not None:
                return module
        before = compiles(name)
        start = time.perf_counter()
        log.info("loading or compiling %s for %s", name, np.dtype(dtype).name)
        for attempt in (0, 1):
            try:
                module = _import(name, source, fresh=attempt == 1)
                build(module, dtype)
                break
            except CacheError:
                raise
            except OSError as e:           # Numba could not save its cache files
                raise _unusable(cache_dir(), f"saving the machine code of {name}", e) from e
            except Exception:
                # a cache entry that cannot be loaded: rebuild it once from the source
                sys.modules.pop(name, None)
                if attempt:
                    raise
        mark_ready(name, dtype)
    log.info("%s ready for %s in %.2f s (%d functions compiled)", name, np.dtype(dtype).name,
             time.perf_counter() - start, compiles(name) - before)
    if compiles(name) > before:
        # Numba's compiler leaves reference cycles (exceptions whose tracebacks hold the
        # calling frames, and through them the caller's arrays, outputs included): free
        # them now, not whenever the cyclic GC next runs
        gc.collect()
    return module


def _import(name: str, source: str, fresh: bool = False):
    """Module ``name`` (imported once per process); ``fresh``: rewrite its files first."""
    module = sys.modules.get(name)
    if module is not None and not fresh:
        return module
    directory = cache_dir()
    path = os.path.join(directory, name + ".py")
    if fresh or not _holds(path, source):
        _clear_numba_cache(name, directory)
        write_atomic(path, source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _generated.add(name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@contextlib.contextmanager
def _compile_lock(name: str):
    """Hold ``NAME.lock``, so that one process compiles module ``name`` at a time."""
    import filelock
    path = os.path.join(cache_dir(), name + ".lock")
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=LOCK_TIMEOUT)
    except filelock.Timeout:
        yield           # a live process has compiled for that long: compile alongside it
        return
    except OSError as e:
        raise _unusable(os.path.dirname(path), f"locking {os.path.basename(path)}", e) from e
    try:
        yield
    finally:
        lock.release()


def compiling_elsewhere(name: str) -> bool:
    """Whether another process holds module ``name``'s compile lock right now."""
    import filelock
    lock = filelock.FileLock(os.path.join(cache_dir(), name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return True
    except OSError as e:
        raise _unusable(cache_dir(), f"locking {name}.lock", e) from e
    lock.release()
    return False


_numba_prepared = False
_generated: set = set()   # names of the modules imported by _import


def _prepare_numba():
    """Set up Numba once, before the first generated module is imported."""
    global _numba_prepared
    if _numba_prepared:
        return
    from numba import config
    from numba.core import event

    # Numba's default threading layer on Linux is GNU OpenMP, which kills a child
    # forked after a parallel call ("fork() called from a process already using GNU
    # OpenMP"): a multiprocessing pool made after a batch hangs. "forksafe" takes TBB
    # where installed (fork- and thread-safe), else workqueue, fork-safe but aborting on
    # parallel calls from two threads at once, which numba_exec serialises anyway. The
    # machine code does not depend on it: cached kernels load whatever the layer. A
    # layer the user chose (NUMBA_THREADING_LAYER, numba.config) is kept.
    if config.THREADING_LAYER == "default":
        config.THREADING_LAYER = "forksafe"

    class CompileWatch(event.Listener):
        """Sees each Numba compile of a generated function: stops, counts or logs it."""

        def on_start(self, ev):
            function = getattr((ev.data or {}).get("dispatcher"), "py_func", None)
            name = getattr(function, "__module__", None)
            if name in _no_compile:
                raise NotReady(name)
            if name in _generated:
                _compiles[name] = _compiles.get(name, 0) + 1
                log = os.environ.get("BATCHDIFF_COMPILE_LOG")
                if log:
                    with open(log, "a") as f:
                        f.write(f"{os.getpid()} {name} {function.__name__}\n")

        def on_end(self, ev):
            pass

    event.register("numba:compile", CompileWatch())
    _numba_prepared = True


def _after_fork():
    # a lock held by another thread at fork stays held in the child, for ever
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork)
