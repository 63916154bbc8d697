"""One benchmark per phase of the pipeline: trace, transform, codegen, compile.

Each ``time_`` method times one phase; its inputs (the traced tape, the derivative
tape, the kernel source) are made in ``setup``. The run phase is in
``bench_executors``; the whole first call in a fresh process in ``bench_coldstart``.

Compile benchmarks start every sample from a fresh, empty kernel cache directory and
a process that has forgotten the kernel (``problems.forget_compiled``,
``problems.forget_replay``), and time what makes the executor ready: the module is
written, imported and compiled (``kernel_module`` compiles both entry points; the
one-point call after it would compile a lazily compiled kernel). The compiled
executor's time includes its codegen, which ``Codegen`` shows is ~1% of it.
"""
import os

import numpy as np

from batchdiff.kernels import layout, numba_compiled, numba_replay
from batchdiff.tracer import trace

from . import problems as P

PROBLEM_NAMES = list(P.PROBLEMS)
CHAIN_SIZES = [1000, 4000, 16000]       # gradient-tape instructions


class Trace:
    """Tracing the per-point function into a tape."""
    params = [PROBLEM_NAMES]
    param_names = ["problem"]

    def setup(self, name):
        self.problem = P.PROBLEMS[name]

    def time_trace(self, name):
        trace(self.problem.f, [self.problem.shape])


class Transform:
    """The AD transform of a traced tape (hessian_tape, jacobian_tape, mode "auto")."""
    params = [PROBLEM_NAMES]
    param_names = ["problem"]

    def setup(self, name):
        self.problem = P.PROBLEMS[name]
        self.tape = P.traced(self.problem)

    def time_transform(self, name):
        P.transform(self.problem, self.tape)


class Codegen:
    """Printing the compiled executor's Numba source from the executable tape."""
    params = [PROBLEM_NAMES, ["float64", "float32"]]
    param_names = ["problem", "dtype"]

    def setup(self, name, dtype):
        problem = P.PROBLEMS[name]
        self.tape = P.program(problem, dtype)
        self.sources = P.sources(problem)

    def time_codegen(self, name, dtype):
        numba_compiled.print_kernel(self.tape, np.dtype(dtype), self.sources)


def _first_call_inputs(problem, tape, dtype):
    """X, S and out of a one-point call: the compile benchmarks' trigger."""
    X, S = layout.pack_inputs([P.points(problem.shape, dtype, 1)], 1, np.dtype(dtype))
    return X, S, [np.empty((1, len(tape.outputs)), dtype=dtype)]


class _CompileKernel:
    """Base of the compiled-kernel compile benchmarks: a fresh cache dir per sample."""
    number = 1
    repeat = 1
    rounds = 1
    warmup_time = 0

    def _prepare(self, problem, dtype="float64"):
        P.warm_numba()
        self.dtype = np.dtype(dtype)
        self.tape = P.program(problem, dtype)
        self.sources = P.sources(problem)
        self.source = numba_compiled.print_kernel(self.tape, self.dtype, self.sources)
        self.inputs = _first_call_inputs(problem, self.tape, dtype)
        self.previous = os.environ.get("BATCHDIFF_CACHE_DIR")
        self.dir = P.fresh_cache_dir()
        P.forget_compiled(self.source)

    def _compile(self):
        module = numba_compiled.kernel_module(self.tape, self.dtype, self.sources,
                                              (len(self.tape.outputs),))
        numba_compiled.run(module, *self.inputs, parallel=True)

    def teardown(self, *params):
        P.forget_compiled(self.source)
        P.drop_cache_dir(self.dir, self.previous)


class Compile(_CompileKernel):
    """Codegen + write + import + Numba compile of a problem's kernel."""
    params = [PROBLEM_NAMES]
    param_names = ["problem"]
    repeat = 3
    timeout = 600           # the Lorenz-96 kernel takes tens of seconds to compile

    def setup(self, name):
        self._prepare(P.PROBLEMS[name])

    def time_compile(self, name):
        self._compile()


class CompileScaling(_CompileKernel):
    """Compile time against tape length: gradient tapes of the sin-mul-add chain."""
    params = [CHAIN_SIZES]
    param_names = ["instructions"]
    timeout = 900

    def setup(self, instructions):
        self._prepare(P.chain(instructions))

    def time_compile(self, instructions):
        self._compile()


class CodegenScaling:
    """Codegen time against tape length, and the exact length of each chain tape."""
    params = [CHAIN_SIZES]
    param_names = ["instructions"]
    timeout = 300

    def setup(self, instructions):
        problem = P.chain(instructions)
        self.tape = P.program(problem)
        self.sources = P.sources(problem)

    def time_codegen(self, instructions):
        numba_compiled.print_kernel(self.tape, np.dtype("float64"), self.sources)

    def track_instructions(self, instructions):
        return len(self.tape.instrs)
    track_instructions.unit = "instructions"


class CompileReplay:
    """The replay interpreter's one-time compile (write + import + Numba compile).

    Every tape then runs without compiling; the disk cache keeps it across processes.
    """
    number = 1
    repeat = 3
    rounds = 1
    warmup_time = 0
    timeout = 300

    def setup(self):
        P.warm_numba()
        problem = P.PROBLEMS["rosenbrock_hessian"]
        self.tape = P.program(problem)
        self.sources = P.sources(problem)
        numba_replay.encode(self.tape, self.sources)
        self.inputs = _first_call_inputs(problem, self.tape, "float64")
        self.previous = os.environ.get("BATCHDIFF_CACHE_DIR")
        self.dir = P.fresh_cache_dir()
        P.forget_replay()

    def time_compile_replay(self):
        numba_replay.run(self.tape, self.sources, *self.inputs, parallel=True)

    def teardown(self):
        P.forget_replay()
        P.drop_cache_dir(self.dir, self.previous)
