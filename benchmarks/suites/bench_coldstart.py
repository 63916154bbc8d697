"""Cold start: the first call of ``bd.hessian(rosenbrock)(X)``, B = 100,000, in a
fresh Python process.

Each sample is a new interpreter (asv's ``timeraw_``). Importing NumPy and batchdiff
and making X are its untimed setup; the timed statement is the first call, which
imports Numba, traces, transforms, and compiles or loads its kernel:

- ``ColdStartEmptyCache``: ``BATCHDIFF_CACHE_DIR`` is a new empty directory, so the
  kernel (compiled) or the interpreter (replay) is compiled;
- ``ColdStartWarmCache``: the directory was filled by the same call in another
  process during ``setup``, so the kernel is loaded from disk.

``method="auto"`` takes what is ready (a compiled kernel or the replay interpreter on
disk) and otherwise runs the NumPy interpreter while the replay interpreter compiles in
a background process; ``"compiled"`` forces the per-expression kernel, compiled in the
calling process. A child waits for its background compiles at exit (untimed), so that
they neither lose their cache directory nor slow down the benchmarks after it.
"""
import inspect
import shutil
import subprocess
import sys
import tempfile

from . import problems as P

METHODS = ["auto", "compiled"]

_PREAMBLE = """
import atexit, os
{cache_dir}
import numpy as np
import batchdiff as bd
try:
    from batchdiff.kernels.warmup import wait as wait_background
except ImportError:          # a batchdiff without background compiles
    def wait_background():
        pass

{function}
X = np.random.default_rng(0).uniform(-1.0, 1.0, ({batch}, 10))
g = bd.hessian(rosenbrock, method={method!r})
atexit.register(wait_background)   # registered last, runs first
"""

_EMPTY_CACHE = """
import shutil, tempfile
_cache = tempfile.mkdtemp(prefix="batchdiff-cold-")
atexit.register(shutil.rmtree, _cache, True)
os.environ["BATCHDIFF_CACHE_DIR"] = _cache
"""

FIRST_CALL = "H = g(X)"


def _setup_code(cache_dir_code: str, method: str) -> str:
    return _PREAMBLE.format(cache_dir=cache_dir_code, function=inspect.getsource(P.rosenbrock),
                            batch=P.B, method=method)


class _ColdStart:
    params = [METHODS]
    param_names = ["method"]
    number = 1
    repeat = 3
    rounds = 1
    warmup_time = 0
    timeout = 300


class ColdStartEmptyCache(_ColdStart):
    """First call in a fresh process with an empty kernel cache."""

    def timeraw_first_call(self, method):
        return FIRST_CALL, _setup_code(_EMPTY_CACHE, method)


class ColdStartWarmCache(_ColdStart):
    """First call in a fresh process whose kernel cache holds the kernel already."""

    def setup(self, method):
        self.dir = tempfile.mkdtemp(prefix="batchdiff-warm-")
        code = _setup_code(f"os.environ['BATCHDIFF_CACHE_DIR'] = {self.dir!r}", method)
        subprocess.run([sys.executable, "-c", code + FIRST_CALL], check=True)

    def timeraw_first_call(self, method):
        code = _setup_code(f"os.environ['BATCHDIFF_CACHE_DIR'] = {self.dir!r}", method)
        return FIRST_CALL, code

    def teardown(self, method):
        shutil.rmtree(self.dir, ignore_errors=True)


def timeraw_import_batchdiff():
    """``import batchdiff`` in a fresh process (NumPy already imported)."""
    return "import batchdiff", "import numpy"
