"""Built-in problems: batchdiff's derivatives checked against analytic ones, and timed.

Each problem is a per-point function in plain NumPy (from ``batchdiff.problems``,
which the benchmarks and the test corpus use too), a transform of it, and an
*oracle*: the same derivative written out by hand from the math, vectorised over the
batch, sharing no code with batchdiff. ``python -m batchdiff demo`` runs every problem
on a batch of points and prints one line each: the error against the oracle, the size
of the derivative tape, and how long building the tape and running it took.

>>> import batchdiff.demo as demo
>>> reports = [demo.run_problem(p, points=8) for p in demo.problems()]
>>> all(r.check.ok for r in reports)
True
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

import batchdiff as bd
from batchdiff import kernels
from batchdiff.problems import ARM_LINKS, arm, lennard_jones, lorenz96, rosenbrock

RTOL = 1e-10                      # float64; errors are normwise per point (see ``check``)


@dataclass(frozen=True)
class Problem:
    """A per-point function, the transform to apply, and a hand-written oracle for it."""
    name: str
    transform: Callable           # bd.grad, bd.jacobian, bd.hessian ...
    f: Callable                   # one point -> value (written for batchdiff to trace)
    oracle: Callable              # batch (B, *in_shape) -> the expected transform result
    sample: Callable              # (rng, B) -> batch of points


class Check(NamedTuple):
    """The largest absolute and (per point) relative error, and the verdict."""
    max_abs: float
    max_rel: float
    ok: bool


class Report(NamedTuple):
    """One problem's line of the demo."""
    problem: Problem
    shape: tuple
    check: Check
    num_ops: int
    build_s: float                # trace + simplify + AD transform (the tape)
    run_s: float                  # a second call: the tape run over the batch


# -- Rosenbrock, n = 10: Hessian -------------------------------------------------------


def rosenbrock_hessian(X):
    """Tridiagonal: d2f/dx_i^2 = 1200 x_i^2 - 400 x_{i+1} + 2 (+ 200 from the previous term)."""
    B, n = X.shape
    H = np.zeros((B, n, n))
    i = np.arange(n)
    diag = np.zeros((B, n))
    diag[:, :-1] = 1200.0 * X[:, :-1] ** 2 - 400.0 * X[:, 1:] + 2.0
    diag[:, 1:] += 200.0
    H[:, i, i] = diag
    H[:, i[:-1], i[1:]] = H[:, i[1:], i[:-1]] = -400.0 * X[:, :-1]
    return H


# -- Lorenz-96, n = 40: Jacobian of the right-hand side --------------------------------


def lorenz96_jacobian(X):
    """dF_i/dx_{i-2} = -x_{i-1}, dF_i/dx_{i-1} = x_{i+1} - x_{i-2}, dF_i/dx_i = -1,
    dF_i/dx_{i+1} = x_{i-1}; all other entries zero."""
    B, n = X.shape
    J = np.zeros((B, n, n))
    i = np.arange(n)
    J[:, i, (i - 2) % n] = -X[:, (i - 1) % n]
    J[:, i, (i - 1) % n] = X[:, (i + 1) % n] - X[:, (i - 2) % n]
    J[:, i, i] = -1.0
    J[:, i, (i + 1) % n] = X[:, (i - 1) % n]
    return J


# -- planar 2-link robot arm: end-effector Jacobian ------------------------------------

L1, L2 = ARM_LINKS


def arm_jacobian(Q):
    """[[-l1 s1 - l2 s12, -l2 s12], [l1 c1 + l2 c12, l2 c12]], s12 = sin(q0 + q1)."""
    s1, c1 = np.sin(Q[:, 0]), np.cos(Q[:, 0])
    s12, c12 = np.sin(Q[:, 0] + Q[:, 1]), np.cos(Q[:, 0] + Q[:, 1])
    return np.stack([np.stack([-L1 * s1 - L2 * s12, -L2 * s12], axis=-1),
                     np.stack([L1 * c1 + L2 * c12, L2 * c12], axis=-1)], axis=1)


# -- Lennard-Jones cluster, 3 atoms in 3-D: gradient (minus the forces) and Hessian -----
# E = sum over pairs of 4 (r^-12 - r^-6) (epsilon = sigma = 1). Written in r2 = |d|^2:
# e(r2) = 4 (r2^-6 - r2^-3), a = e'(r2), b = e''(r2); grad_i = 2 a d for d = x_i - x_j,
# and the Hessian block of a pair is K = 2 a I + 4 b d d^T: +K on (i,i), (j,j), -K on (i,j).

N_ATOMS = 3
PAIRS = [(i, j) for i in range(N_ATOMS) for j in range(i + 1, N_ATOMS)]


def _lj_pairs(X):
    """Per pair: (i, j, d, a, b) over the batch."""
    R = X.reshape(len(X), N_ATOMS, 3)
    for i, j in PAIRS:
        d = R[:, i] - R[:, j]
        r2 = np.sum(d * d, axis=1)
        a = 4.0 * (-6.0 * r2 ** -7 + 3.0 * r2 ** -4)
        b = 4.0 * (42.0 * r2 ** -8 - 12.0 * r2 ** -5)
        yield i, j, d, a, b


def lj_gradient(X):
    """dE/dx (the forces are its negative), shaped like X."""
    G = np.zeros((len(X), N_ATOMS, 3))
    for i, j, d, a, _ in _lj_pairs(X):
        G[:, i] += 2.0 * a[:, None] * d
        G[:, j] -= 2.0 * a[:, None] * d
    return G.reshape(X.shape)


def lj_hessian(X):
    """d2E/dx2, (B, 3 * N_ATOMS, 3 * N_ATOMS)."""
    H = np.zeros((len(X), N_ATOMS, 3, N_ATOMS, 3))
    for i, j, d, a, b in _lj_pairs(X):
        K = (2.0 * a[:, None, None] * np.eye(3)
             + 4.0 * b[:, None, None] * d[:, :, None] * d[:, None, :])
        H[:, i, :, i] += K
        H[:, j, :, j] += K
        H[:, i, :, j] -= K
        H[:, j, :, i] -= K
    return H.reshape(len(X), 3 * N_ATOMS, 3 * N_ATOMS)


def lj_sample(rng, B):
    """Near-equilibrium triangles: side 2^(1/6), every coordinate jittered by up to 0.15."""
    side = 2.0 ** (1.0 / 6.0)
    triangle = side * np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, np.sqrt(0.75), 0.0]])
    return (triangle.ravel() + rng.uniform(-0.15, 0.15, (B, 3 * N_ATOMS)))


def problems() -> list[Problem]:
    """The demo's problems, in the order they run."""
    return [
        Problem("Rosenbrock n=10", bd.hessian, rosenbrock, rosenbrock_hessian,
                lambda rng, B: rng.uniform(-2.0, 2.0, (B, 10))),
        Problem("Lorenz-96 n=40", bd.jacobian, lorenz96, lorenz96_jacobian,
                lambda rng, B: rng.uniform(-5.0, 10.0, (B, 40))),
        Problem("2-link arm tip", bd.jacobian, arm, arm_jacobian,
                lambda rng, B: rng.uniform(-np.pi, np.pi, (B, 2))),
        Problem("Lennard-Jones 3 atoms", bd.grad, lennard_jones, lj_gradient, lj_sample),
        Problem("Lennard-Jones 3 atoms", bd.hessian, lennard_jones, lj_hessian, lj_sample),
    ]


# -- checking and running --------------------------------------------------------------

def check(got, want, rtol: float = RTOL, chunk: int = 4096) -> Check:
    """Compare a batch of results with the oracle's.

    The relative error is normwise per point (largest entry error over the largest
    entry of that point's oracle), so entries that cancel to near zero do not count
    as large relative errors. NaN anywhere, or a shape mismatch, fails. The batch is
    compared ``chunk`` points at a time to keep temporaries small.

    >>> want = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> check(want + 1e-14, want).ok, check(want * 1.001, want).ok
    (True, False)
    """
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return Check(np.inf, np.inf, False)
    max_abs = max_rel = 0.0
    finite = True
    for start in range(0, len(want), chunk):
        a = got[start:start + chunk].reshape(-1, want[0].size)
        b = want[start:start + chunk].reshape(-1, want[0].size)
        finite &= bool(np.isfinite(a).all() and np.isfinite(b).all())
        err = np.abs(a - b).max(axis=1)
        scale = np.maximum(np.abs(b).max(axis=1), np.finfo(b.dtype).tiny)
        max_abs = max(max_abs, float(err.max()))
        max_rel = max(max_rel, float((err / scale).max()))
    return Check(max_abs, max_rel, finite and max_rel <= rtol)


def run_problem(problem: Problem, points: int, seed: int = 0, scheduler=None) -> Report:
    """Build the transform's tape, run it twice on ``points`` points, check the result.

    With a Dask ``scheduler`` (``"threads"`` or a ``distributed.Client``) the batch is a
    Dask array of ``DASK_BLOCKS`` blocks, each drawn, differentiated and checked where
    it is computed; the timed run is a second computation, reduced to a sum per block.
    """
    X = problem.sample(np.random.default_rng(seed), points if scheduler is None else 1)
    g = problem.transform(problem.f)
    t0 = time.perf_counter()
    tape = g.tape(X)                       # what a first call does before it runs
    build_s = time.perf_counter() - t0
    if scheduler is not None:
        return _run_on_dask(problem, g, X.shape[1], points, seed, scheduler, tape.num_ops,
                            build_s)
    got = g(X)
    shape, result = got.shape, check(got, problem.oracle(X))
    del got                                # free it: outputs can be large (Lorenz-96)
    t0 = time.perf_counter()
    g(X)
    run_s = time.perf_counter() - t0
    return Report(problem, shape, result, tape.num_ops, build_s, run_s)


# -- the same problems through Dask -------------------------------------------------------

DASK_BLOCKS = 4


def _run_on_dask(problem, g, dim, points, seed, scheduler, num_ops, build_s) -> Report:
    import dask
    import dask.array as da
    sizes = [len(k) for k in np.array_split(np.arange(points), DASK_BLOCKS)]
    X = da.concatenate([da.from_delayed(dask.delayed(_sample_block)(problem.sample, seed, k, n),
                                        (n, dim), np.float64) for k, n in enumerate(sizes)])
    got = g(X)
    errors = da.blockwise(_block_errors, "b", got, "b" + "ijk"[:got.ndim - 1], X, "bx",
                          oracle=problem.oracle, dtype=float, adjust_chunks={"b": 3},
                          concatenate=True)
    (errors,) = dask.compute(errors.reshape(-1, 3), scheduler=scheduler)
    worst = errors.max(axis=0, initial=0.0)
    result = Check(float(worst[0]), float(worst[1]), not worst[2])
    t0 = time.perf_counter()
    dask.compute(g(X).sum(axis=0), scheduler=scheduler)
    run_s = time.perf_counter() - t0
    return Report(problem, got.shape, result, num_ops, build_s, run_s)


def _sample_block(sample, seed, k, n):
    return sample(np.random.default_rng([seed, k]), n)


def _block_errors(got, X, oracle):
    """``check`` of one block, run where the block is: (max abs, max rel, 1 if it failed)."""
    c = check(got, oracle(X))
    return np.array([c.max_abs, c.max_rel, float(not c.ok)])


def dask_scheduler(spec: str):
    """A context giving the Dask scheduler the demo runs on, from ``--dask SPEC``.

    ``"cluster"``: a ``LocalCluster`` of one single-threaded worker process per core
    (the recommended layout); ``"threads"``: Dask's local threaded scheduler; anything
    else is the address of a running ``dask.distributed`` scheduler.
    """
    if spec == "threads":
        return contextlib.nullcontext("threads")
    from dask.distributed import Client, LocalCluster
    if spec == "cluster":
        cluster = LocalCluster(n_workers=os.cpu_count(), threads_per_worker=1, processes=True)
        return _closing_client(Client(cluster), cluster)
    return _closing_client(Client(spec))


@contextlib.contextmanager
def _closing_client(client, cluster=None):
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


HEADER = (f"{'problem':<22} {'transform':<9} {'output shape':<17} {'max abs err':>11} "
          f"{'max rel err':>11} {'tape ops':>8} {'trace+AD':>9} {'run':>8}  verdict")


def format_report(r: Report) -> str:
    """The report as one line under ``HEADER``, ending in OK or FAIL."""
    return (f"{r.problem.name:<22} {r.problem.transform.__name__:<9} {str(r.shape):<17} "
            f"{r.check.max_abs:>11.1e} {r.check.max_rel:>11.1e} {r.num_ops:>8} "
            f"{r.build_s:>8.3f}s {r.run_s:>7.3f}s  {'OK' if r.check.ok else 'FAIL'}")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 point, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser):
    """The demo's command-line options (shared with ``python -m batchdiff demo``)."""
    parser.add_argument("--points", type=_positive_int, default=100_000, metavar="N",
                        help="points per batch (default 100,000)")
    parser.add_argument("--dask", nargs="?", const="cluster", metavar="SCHEDULER",
                        help="run through Dask: 'cluster' (default: a LocalCluster of one "
                             "worker process per core), 'threads', or a scheduler address")


def main(argv=None) -> int:
    """Run every problem, print one line each; returns 1 if any check fails, else 0."""
    parser = argparse.ArgumentParser(prog="python -m batchdiff demo",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args.points, args.dask)


def run(points: int, dask: str | None = None) -> int:
    """The demo on ``points`` points per problem (through Dask if ``dask``); the exit status."""
    if dask is not None:
        with dask_scheduler(dask) as scheduler:
            return _run_all(points, scheduler, f", through Dask ({dask}, {DASK_BLOCKS} blocks)")
    return _run_all(points, None, "")


def _run_all(points, scheduler, where) -> int:
    print(f"batchdiff {bd.__version__} demo: {points:,} points per problem, float64, "
          f"backend {kernels.resolve(None, np)!r}{where}; errors against hand-written "
          "derivatives")
    print(HEADER)
    todo, failed = problems(), 0
    for problem in todo:
        report = run_problem(problem, points, scheduler=scheduler)
        failed += not report.check.ok
        print(format_report(report), flush=True)
    verdict = f"{len(todo) - failed} of {len(todo)} checks OK" + (
        f", {failed} FAILED" if failed else "")
    run_is = ("a second computation, summed per block" if scheduler is not None
              else "a second call g(X)")
    print(verdict + f"  (trace+AD: building the tape, g.tape(X); run: {run_is})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
