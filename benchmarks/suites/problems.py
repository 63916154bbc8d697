"""The benchmark problems and the helpers the benchmark modules share.

Problems (per point, plain NumPy, as a user writes them):

- ``rosenbrock_hessian``: Hessian of the Rosenbrock function, n = 10;
- ``lorenz96_jacobian``: Jacobian of the Lorenz-96 right-hand side, n = 40;
- ``mlp64_grad``, ``mlp64_hessian``: input gradient and Hessian of a tanh MLP
  3-64-64-64-1, whose 64 x 64 products are block instructions;
- ``chain(instructions)``: gradient of ``t = sin(t) * x[k % 8] + 0.5`` repeated for as
  many steps as give a gradient tape of about ``instructions`` instructions (8 per step),
  to measure how compile time grows with the tape.

Everything a benchmark's ``setup`` needs is memoised here, per process: asv re-runs
``setup`` before every timed sample, so a repeated setup must cost next to nothing.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from typing import Callable, NamedTuple

import numpy as np

import batchdiff as bd
from batchdiff import ad
from batchdiff.kernels import cache, layout, numba_compiled, numba_replay
from batchdiff.tracer import trace
from batchdiff.transforms import build_program

B = 100_000                 # points per batch in the run benchmarks
WARM_B = 4096               # a warm-up batch: big enough for the parallel path (>= 2048)
CHAIN_INPUTS = 8
CHAIN_INSTRUCTIONS_PER_STEP = 8   # of the gradient tape: 8 L - 2 instructions for L steps

EXECUTORS = {               # executor name -> (backend, method) of the public API
    "numpy": ("numpy", "auto"),
    "replay": ("numba", "replay"),
    "compiled": ("numba", "compiled"),
}


# the problem functions are the ones benchmarks/compare.py runs (benchmarks/problems.py)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import problems as shared  # noqa: E402

rosenbrock, lorenz96 = shared.rosenbrock, shared.lorenz96


class Problem(NamedTuple):
    name: str
    f: Callable
    kind: str               # the batchdiff transform: "hessian", "jacobian", "grad"
    shape: tuple            # the per-point input shape


PROBLEMS = {
    "rosenbrock_hessian": Problem("rosenbrock_hessian", rosenbrock, "hessian", (10,)),
    "lorenz96_jacobian": Problem("lorenz96_jacobian", lorenz96, "jacobian", (40,)),
    # a tanh MLP 3-64-64-64-1 (block instructions): its input gradient and Hessian
    "mlp64_grad": Problem("mlp64_grad", shared.mlp64, "grad", (3,)),
    "mlp64_hessian": Problem("mlp64_hessian", shared.mlp64, "hessian", (3,)),
}


@functools.lru_cache(maxsize=None)
def chain(instructions: int) -> Problem:
    """The chain problem whose gradient tape has about ``instructions`` instructions."""
    steps = max(1, round(instructions / CHAIN_INSTRUCTIONS_PER_STEP))
    return Problem(f"chain_{steps}", shared.chain(steps, CHAIN_INPUTS), "grad", (CHAIN_INPUTS,))


# -- prepared inputs of each phase (memoised) --------------------------------------------

@functools.lru_cache(maxsize=None)
def points(shape: tuple, dtype: str, size: int = B) -> np.ndarray:
    """``size`` points of ``shape`` in [-1, 1), the same in every process."""
    rng = np.random.default_rng(0)
    return rng.uniform(-1.0, 1.0, (size,) + shape).astype(dtype)


@functools.lru_cache(maxsize=None)
def traced(problem: Problem):
    """The problem's function traced at its shape: the input of the transform phase."""
    tape, _, _ = trace(problem.f, [problem.shape])
    return tape


def transform(problem: Problem, tape):
    """The AD transform phase alone: the derivative tape of a traced ``tape``."""
    wrt = list(range(int(np.prod(problem.shape))))
    if problem.kind == "hessian":
        return ad.hessian_tape(tape, wrt, "auto")
    if problem.kind == "jacobian":
        return ad.jacobian_tape(tape, wrt, "auto")
    return ad.jacobian_tape(tape, wrt, "reverse")       # grad


@functools.lru_cache(maxsize=None)
def program(problem: Problem, dtype: str = "float64"):
    """The executable tape the public API runs for the problem (trace + transform)."""
    return build_program(problem.kind, problem.f, [problem.shape], (0,), "auto",
                         np.dtype(dtype)).executable


def sources(problem: Problem) -> tuple:
    """The executors' input layout of the problem: every input a column of X."""
    n = int(np.prod(problem.shape))
    return tuple(layout.sources_of([np.empty((2, n))], 2))


@functools.lru_cache(maxsize=None)
def transformed(problem: Problem, executor: str):
    """The public transformed function running on ``executor``."""
    backend, method = EXECUTORS[executor]
    return getattr(bd, problem.kind)(problem.f, backend=backend, method=method)


@functools.lru_cache(maxsize=None)
def warmed(problem: Problem, executor: str, dtype: str):
    """``transformed`` after a call on a small batch: traced, built, compiled, loaded."""
    g = transformed(problem, executor)
    g(points(problem.shape, dtype, WARM_B))
    return g


# -- fresh kernel caches ------------------------------------------------------------------

def fresh_cache_dir() -> str:
    """Point ``BATCHDIFF_CACHE_DIR`` at a new empty directory; returns it."""
    path = tempfile.mkdtemp(prefix="batchdiff-bench-")
    os.environ["BATCHDIFF_CACHE_DIR"] = path
    return path


def drop_cache_dir(path: str, previous: str | None):
    """Remove a directory made by ``fresh_cache_dir`` and restore the variable."""
    if previous is None:
        os.environ.pop("BATCHDIFF_CACHE_DIR", None)
    else:
        os.environ["BATCHDIFF_CACHE_DIR"] = previous
    shutil.rmtree(path, ignore_errors=True)


def forget_module(source: str, prefix: str):
    """Drop a generated module from this process, so the next load imports it again."""
    sys.modules.pop(cache.module_name(source, prefix), None)


def forget_compiled(source: str):
    """Forget every compiled kernel of this process (the memo and the module ``source``)."""
    numba_compiled._kernels.clear()
    numba_compiled._names.clear()
    forget_module(source, numba_compiled.PREFIX)


def forget_replay():
    """Forget the replay interpreter in this process: the next run loads or compiles it."""
    numba_replay.interpreter.cache_clear()
    numba_replay.module_name.cache_clear()
    numba_replay._loaded.clear()
    forget_module(numba_replay.replay_source(), numba_replay.PREFIX)


@functools.lru_cache(maxsize=None)
def warm_numba():
    """Compile one tiny parallel function, so that Numba's one-time start-up cost
    (LLVM initialisation, the threading layer) is not charged to a compile benchmark."""
    from numba import njit, prange

    @njit(parallel=True)
    def scale(x):
        for i in prange(x.shape[0]):
            x[i] *= 2.0

    scale(np.ones(4096))
