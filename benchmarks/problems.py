"""The benchmark problems: each a per-point function for batchdiff, the same function
for JAX and PyTorch, and a hand-written analytic Numba kernel of its derivative.

Shared by ``compare.py``, ``memory.py`` and the asv suite. A problem's ``numpy``
function is written once with ``xp`` standing for the array module, so the batchdiff,
JAX and PyTorch versions are the same code. ``Problem.method`` makes the calls whose
outputs the output-memory targets compare (``METHODS``): batchdiff with and without
``out=``, dense and (for a Jacobian or Hessian) sparse, and the hand-written kernel into a
reused or a new array.

It also holds what the standalone timing scripts share: ``fastest`` (best of N calls),
``fastest_interleaved`` (best of N rounds of several calls), ``measured_line`` (a results table's first line) and ``write_result`` (the table, into
``benchmarks/results/``).
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import batchdiff as bd
import handwritten as hw
from batchdiff.problems import arm, lennard_jones, lorenz96, mlp, rosenbrock, tanh_mlp  # noqa: F401

AUTO = "batchdiff auto"
AUTO_OUT = "batchdiff auto, out="
SPARSE = "batchdiff sparse"
SPARSE_OUT = "batchdiff sparse, out="
METHODS = (hw.REUSED, hw.ALLOCATING, AUTO, AUTO_OUT, SPARSE, SPARSE_OUT)
# the transforms that take sparse=True (bd.grad does not: a gradient is a dense vector)
SPARSE_TRANSFORMS = ("jacobian", "hessian")
# where the standalone scripts write their tables
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def fastest(fn, *args, repeats=9, warmup=True, **kwargs) -> float:
    """The shortest wall time in seconds (``time.perf_counter``) of ``repeats`` calls
    ``fn(*args, **kwargs)``, after one call that is not timed (none if ``warmup=False``).

    >>> fastest(sorted, [3, 1, 2], repeats=3, reverse=True) < 1.0
    True
    """
    if warmup:
        fn(*args, **kwargs)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best


def fastest_interleaved(calls, repeats=25) -> list:
    """The shortest wall time in seconds of each of ``calls`` (functions of no argument),
    called in turn ``repeats`` times after one untimed round: a burst of load from
    elsewhere on the machine then hits every call alike, not the one that ran during it.

    >>> len(fastest_interleaved([lambda: None, lambda: None], repeats=2))
    2
    """
    for call in calls:
        call()
    best = [float("inf")] * len(calls)
    for _ in range(repeats):
        for k, call in enumerate(calls):
            t = time.perf_counter()
            call()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def measured_line(script, what, sep=", ") -> str:
    """The first line of a results table: ``Measured with `python benchmarks/SCRIPT` on
    DATE (N cores)``, then ``sep`` and ``what``.

    >>> measured_line("x.py", "float64.").endswith(f"({os.cpu_count()} cores), float64.")
    True
    """
    return (f"Measured with `python benchmarks/{script}` on {time.strftime('%Y-%m-%d')} "
            f"({os.cpu_count()} cores){sep}{what}")


def table_head(*columns) -> list:
    """A Markdown table's header and rule lines.

    >>> table_head("problem", "B", "1,000 points")
    ['| problem | B | 1,000 points |', '|---|---|---|']
    """
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def write_result(name, lines) -> str:
    """Write ``lines``, one a line, to ``benchmarks/results/NAME`` (the folder made if
    missing); return the file's path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def chain(steps, n=8, step=np.sin):
    """``t = step(t) * x[k % n] + 0.5``, ``steps`` times: a deep chain of dependent ops.

    ``step``: ``np.sin`` by default; ``relu_step`` makes the chain a leaky ReLU one, whose
    derivative tapes hold ``max`` and ``where``."""
    def f(x):
        t = x[0]
        for k in range(steps):
            t = step(t) * x[k % n] + 0.5
        return t
    return f


def relu_step(t):
    """A leaky ReLU, ``max(t, 0.1 t)``: a step of ``chain`` whose tapes branch."""
    return np.maximum(t, 0.1 * t)


def _lj_points(batch, rng):
    base = np.array([0, 0, 0, 1.12, 0, 0, 0.56, 0.97, 0, 0.56, 0.32, 0.91])
    return base + 0.05 * rng.standard_normal((batch, 12))


def resident(shape, dtype) -> np.ndarray:
    """A new array with every page touched: a buffer that is reused call after call."""
    a = np.empty(shape, dtype=dtype)
    a.fill(0)
    return a


_MLP64 = hw.deep_mlp(64)          # hand-written gradient and Hessian kernels


@functools.lru_cache(maxsize=None)
def _tanh_mlp(width, xp):
    return tanh_mlp(width, xp=xp)


def mlp64(x, xp=np):
    """``batchdiff.problems.tanh_mlp(64)``, a tanh MLP 3-64-64-64-1, in ``xp``."""
    return _tanh_mlp(64, xp)(x)


@dataclass(frozen=True)
class Problem:
    name: str
    transform: str                 # "grad", "jacobian" or "hessian": a function of bd
    fn: Callable                   # fn(x, xp)
    dim: int
    batch: int                     # points at which it is compared
    kernel: Callable               # kernel(X, out): hand-written, into out (B, *out_shape)
    make_points: Callable = None

    @property
    def out_shape(self) -> tuple:
        """The per-point shape of the dense result: ``(dim,)`` for a gradient, else
        ``(dim, dim)`` (every Jacobian here is square)."""
        return (self.dim,) if self.transform == "grad" else (self.dim, self.dim)

    @property
    def methods(self) -> tuple:
        """The names of ``METHODS`` that apply: the sparse ones for a Jacobian or Hessian.

        >>> problem("tanh MLP 8-16-16-1").methods == METHODS[:4]
        True
        """
        sparse = self.transform in SPARSE_TRANSFORMS
        return tuple(m for m in METHODS if sparse or m not in (SPARSE, SPARSE_OUT))

    def points(self, batch, rng, dtype=np.float64):
        x = (self.make_points(batch, rng) if self.make_points
             else rng.uniform(-1.0, 1.0, size=(batch, self.dim)))
        return np.ascontiguousarray(x, dtype=dtype)

    @functools.lru_cache(maxsize=None)
    def derivative(self, **options):
        """``bd.grad``, ``bd.jacobian`` or ``bd.hessian`` of ``fn`` with ``options``, one
        per process for the same options (so that it traces once for all the calls made
        of it)."""
        return getattr(bd, self.transform)(self.fn, **options)

    def method(self, name, X):
        """The call ``X -> result`` that ``name`` (one of ``methods``) makes on batches
        shaped like ``X``. A reused buffer is made here, resident, as in a loop that
        has run before; each call writes into it and returns it.

        >>> import numpy as np
        >>> arm = problem("2-link arm")
        >>> X = arm.points(3, np.random.default_rng(0))
        >>> call = arm.method(SPARSE_OUT, X)
        >>> call(X).values.shape, call(X).values is call(X).values
        ((3, 4), True)
        """
        if name == hw.ALLOCATING:
            return hw.allocating(self.kernel, self.out_shape)
        dense = (len(X),) + self.out_shape
        if name == hw.REUSED:
            return hw.reused(self.kernel, resident(dense, X.dtype))
        g = self.derivative(sparse=True) if name in (SPARSE, SPARSE_OUT) else self.derivative()
        if name in (AUTO, SPARSE):
            return g
        if name == SPARSE_OUT:      # values (B, nnz): a one-point call of its own tells nnz
            shape = (len(X), self.derivative(sparse=True, backend="numpy")(X[:1]).nnz)
        else:
            shape = dense
        return functools.partial(g, out=resident(shape, X.dtype))


PROBLEMS = [
    Problem("Rosenbrock n=10", "hessian", rosenbrock, 10, 100_000, hw.rosenbrock_hessian),
    Problem("Rosenbrock n=100", "hessian", rosenbrock, 100, 10_000, hw.rosenbrock_hessian),
    Problem("Lorenz-96 n=40", "jacobian", lorenz96, 40, 100_000, hw.lorenz96_jacobian),
    Problem("2-link arm", "jacobian", arm, 2, 100_000, hw.arm_jacobian),
    Problem("Lennard-Jones 4 atoms", "hessian", lennard_jones, 12, 100_000,
            hw.lennard_jones_hessian, _lj_points),
    # the network of a physics-informed NN: its input gradient, and its input Hessian (the
    # names differ: results are keyed by name, and the tables add the transform)
    Problem("tanh MLP 8-16-16-1", "grad", mlp, 8, 100_000, hw.mlp_gradient),
    Problem("tanh MLP 8-16-16-1 input", "hessian", mlp, 8, 100_000, hw.mlp_hessian),
    # a PINN's network at the width users run: 64 x 64 products, block instructions
    Problem("tanh MLP 3-64-64-64-1", "grad", mlp64, 3, 100_000, _MLP64[0]),
    Problem("tanh MLP 3-64-64-64-1 input", "hessian", mlp64, 3, 100_000, _MLP64[1]),
]


def problem(name) -> Problem:
    """The problem called ``name``."""
    for p in PROBLEMS:
        if p.name == name:
            return p
    raise KeyError(f"no benchmark problem {name!r}; there are {[p.name for p in PROBLEMS]}")


def timing_cases(names, rng, batch=100_000):
    """``(label, transform, f, X)`` for the problems called ``names``, then the gradient of a
    sin chain of 125 steps: the compute-bound cases of the kernel timing scripts."""
    for name in names:
        p = problem(name)
        yield f"{p.name} {p.transform}", getattr(bd, p.transform), p.fn, p.points(batch, rng)
    yield "sin chain, 125 steps, grad", bd.grad, chain(125), rng.uniform(-1, 1, (batch, 8))
