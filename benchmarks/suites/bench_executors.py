"""The run phase: one call of the public transform on B = 100,000 points, per executor.

Executors: ``numpy`` (the reference interpreter), ``replay`` and ``compiled`` (Numba).
``setup`` traces, transforms and compiles (or loads from the kernel cache) on a small
batch first, so the timed call only runs: batch checks, the executor (input packing,
output allocation, the kernel) and the result views. Compare with the hand-written
kernels of ``benchmarks/handwritten.py``.

``Run.setup`` also makes one untimed full-size call per process, so that a quick run's
single sample is not the process's first touch of a 1.28 GB output (Lorenz-96). Even so,
on the 2-core virtual machine that call varies by 10x from one process to the next
(0.14 s to 1.8 s for replay, steady within a process), nearly all of it page faults on
the freshly allocated output; ``Kernel`` times the Numba kernels alone, writing into a
preallocated output, as the hand-written kernels are timed.

Peak memory is the whole process's maximum resident size (asv's ``peakmem``), so
``peakmem_setup_only`` gives the baseline of the same process without the timed call:
the difference is what the call adds (for Lorenz-96 the (B, 40, 40) float64 result
alone is 1.28 GB).
"""
import functools

import numpy as np

from batchdiff.kernels import layout, numba_compiled, numba_replay

from . import problems as P

PROBLEM_NAMES = list(P.PROBLEMS)
EXECUTOR_NAMES = list(P.EXECUTORS)
FLOAT32_PROBLEMS = ("rosenbrock_hessian",)


@functools.lru_cache(maxsize=None)
def _full_size_call(problem, executor, dtype):
    P.warmed(problem, executor, dtype)(P.points(problem.shape, dtype))


class Run:
    """Seconds per call on B = 100,000 points (float32 for the Rosenbrock Hessian only)."""
    params = [PROBLEM_NAMES, EXECUTOR_NAMES, ["float64", "float32"]]
    param_names = ["problem", "executor", "dtype"]
    timeout = 300

    def setup(self, name, executor, dtype):
        if dtype == "float32" and name not in FLOAT32_PROBLEMS:
            raise NotImplementedError("float32 is benchmarked on the Rosenbrock Hessian only")
        problem = P.PROBLEMS[name]
        self.g = P.warmed(problem, executor, dtype)
        self.X = P.points(problem.shape, dtype)
        _full_size_call(problem, executor, dtype)

    def time_run(self, name, executor, dtype):
        self.g(self.X)


@functools.lru_cache(maxsize=None)
def _kernel_arrays(problem, dtype):
    """X, S and a preallocated, already touched output of a full-size call."""
    tape = P.program(problem, dtype)
    X, S = layout.pack_inputs([P.points(problem.shape, dtype)], P.B, np.dtype(dtype))
    out = np.zeros((P.B, len(tape.outputs)), dtype=dtype)
    return X, S, [out]


class Kernel:
    """Seconds per kernel call on B = 100,000 points into a preallocated output."""
    params = [PROBLEM_NAMES, ["replay", "compiled"]]
    param_names = ["problem", "executor"]
    timeout = 300

    def setup(self, name, executor):
        problem = P.PROBLEMS[name]
        self.tape = P.program(problem)
        self.sources = P.sources(problem)
        self.arrays = _kernel_arrays(problem, "float64")
        self.module = (numba_compiled.kernel_module(self.tape, np.dtype("float64"),
                                                    self.sources, (len(self.tape.outputs),))
                       if executor == "compiled" else None)
        self.time_kernel(name, executor)        # compiled or loaded here, once

    def time_kernel(self, name, executor):
        if self.module is None:
            numba_replay.run(self.tape, self.sources, *self.arrays, parallel=True)
        else:
            numba_compiled.run(self.module, *self.arrays, parallel=True)


class RunMemory:
    """Peak resident memory of a process that makes one call on B = 100,000 points."""
    params = [PROBLEM_NAMES, EXECUTOR_NAMES]
    param_names = ["problem", "executor"]
    timeout = 300

    def setup(self, name, executor):
        problem = P.PROBLEMS[name]
        self.g = P.warmed(problem, executor, "float64")     # on a small batch
        self.X = P.points(problem.shape, "float64")

    def peakmem_run(self, name, executor):
        self.g(self.X)

    def peakmem_setup_only(self, name, executor):
        pass
