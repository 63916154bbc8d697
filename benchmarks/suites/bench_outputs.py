"""Output memory: ``out=`` buffers and sparse results, against the hand-written kernels.

Each method of ``benchmarks/problems.py`` (``METHODS``, made by ``Problem.method``) on
the problems of the output-memory targets, at the batch sizes ``compare.py`` uses
(Rosenbrock n = 100 at 10,000 points, the others at 100,000), float64:

- ``batchdiff auto``: ``bd.jacobian(f)(X)`` or ``bd.hessian(f)(X)``, a new output per call;
- ``batchdiff auto, out=``: the same into one buffer, reused call after call;
- ``batchdiff sparse`` and ``batchdiff sparse, out=``: ``sparse=True``, new values per
  call, or the same ``(B, nnz)`` values array every call;
- ``hand-written, reused buffer`` and ``hand-written, allocating``: the analytic kernel
  of ``benchmarks/handwritten.py`` into one preallocated array, or into ``np.empty``
  made for each call.

The targets (``compare.py`` checks them): sparse at least 5x (Lorenz-96) and 20x
(Rosenbrock n = 100) faster than the hand-written kernel into a reused buffer; dense
``out=`` within 1.2x of it, dense without ``out=`` within 1.5x of the allocating one;
one call's peak memory at most 1.1 x the output's bytes + the inputs + 0.3 GB.

``Run.setup`` makes one untimed full-size call per process (buffers touched, ``auto``'s
executor chosen, the first touch of a fresh output's pages not in a quick run's only
sample). ``Memory`` is the peak resident size of the process (asv's ``peakmem``),
whose setup made a call on a small batch (kernels compiled or loaded) and the reused
buffers; ``peakmem_setup_only`` is the same process without the call.
"""
import functools

import numpy as np

from . import problems as P

PROBLEM_NAMES = ["Rosenbrock n=10", "Rosenbrock n=100", "Lorenz-96 n=40"]
METHOD_NAMES = list(P.shared.METHODS)


@functools.lru_cache(maxsize=None)
def prepared(name, method):
    """``(call, X)``: ``method`` on the problem's full batch, its kernels ready."""
    problem = P.shared.problem(name)
    X = problem.points(problem.batch, np.random.default_rng(0))
    small = X[:P.WARM_B]
    problem.method(method, small)(small)        # traced, compiled or loaded
    return problem.method(method, X), X


@functools.lru_cache(maxsize=None)
def _full_size_call(name, method):
    call, X = prepared(name, method)
    call(X)


class _Outputs:
    params = [PROBLEM_NAMES, METHOD_NAMES]
    param_names = ["problem", "method"]
    timeout = 300


class Run(_Outputs):
    """Seconds per call on the problem's batch."""

    def setup(self, name, method):
        self.call, self.X = prepared(name, method)
        _full_size_call(name, method)

    def time_call(self, name, method):
        self.call(self.X)


class Memory(_Outputs):
    """Peak resident memory of a process that makes one call on the problem's batch."""

    def setup(self, name, method):
        self.call, self.X = prepared(name, method)

    def peakmem_call(self, name, method):
        self.call(self.X)

    def peakmem_setup_only(self, name, method):
        pass
