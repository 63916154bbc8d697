"""Bundle adjustment at BAL size: the problem's sparse Jacobian against the per-observation ones.

    python benchmarks/bundle_adjustment.py
    python benchmarks/bundle_adjustment.py --observations 100000
    python benchmarks/bundle_adjustment.py --solve

A synthetic problem shaped like the BAL data sets (Ladybug, Venice): by default 10^6
observations of 10^5 points by 2,000 cameras. A camera has 9 parameters (Rodrigues
rotation, translation, focal length, two radial distortion coefficients) and a point 3;
an observation's residual is the SciPy cookbook's projection (``Large-scale bundle
adjustment in scipy``), written for one observation: 2 residuals of 12 parameters.
Timed, each the fastest of several calls taking turns, after the kernels are compiled:

- the per-observation Jacobians alone, ``bd.jacobian(residual)`` on the ``(n_obs, 12)``
  gathered parameters (with ``out=`` a buffer made once, and allocating), and the fused
  sparse ``bd.value_and_jacobian`` that ``Terms`` runs;
- ``bd.Terms``: its assembled CSR Jacobian (the values written into the pattern made
  on the first call), its residuals and Jacobian together, and ``gauss_newton`` (r,
  JᵀJ, Jᵀr);
- the gather of the parameters by index (``params[index]``, and ``np.take`` into a
  buffer), and the plain SciPy assembly (``coo_matrix(...).tocsr()`` of the
  per-observation blocks);
- JAX ``jit(vmap(jacfwd(residual)))`` on the gathered parameters, when JAX is installed.

The last column is each time over the per-observation Jacobians alone (the faster of the
two ``bd.jacobian`` rows); the bound aimed at is assembled / alone ≤ 2. Before timing,
Terms' matrix is checked against the plain SciPy construction and central differences
on a small problem, and JAX's blocks against batchdiff's. The table goes to
``benchmarks/results/bundle_adjustment.md``.

``--solve`` then runs ``scipy.optimize.least_squares`` (``method="trf"``,
``tr_solver="lsmr"``, ``x_scale="jac"``, ``jac=`` from Terms) for at most
``--iterations`` residual evaluations (``max_nfev``) from a perturbed start, and prints the cost before and after and
the time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BATCHDIFF_BACKGROUND_COMPILE", "0")

import batchdiff as bd  # noqa: E402
from problems import (fastest_interleaved, measured_line, resident, table_head,  # noqa: E402
                      write_result)

CAMERA, POINT = 9, 3


def residual(p, seen, xp=np):
    """The reprojection error of one observation: ``p`` = camera (Rodrigues rotation w,
    translation t, focal f, distortion k1, k2) then point X; ``seen`` its 2 image
    coordinates. Indexing only the first axis, it also runs on ``(12, n)`` columns."""
    w, t, X = p[0:3], p[3:6], p[9:12]
    f, k1, k2 = p[6], p[7], p[8]
    theta = xp.sqrt(w[0] ** 2 + w[1] ** 2 + w[2] ** 2)
    v = [w[0] / theta, w[1] / theta, w[2] / theta]
    c, s = xp.cos(theta), xp.sin(theta)
    dot = v[0] * X[0] + v[1] * X[1] + v[2] * X[2]
    cross = [v[1] * X[2] - v[2] * X[1], v[2] * X[0] - v[0] * X[2], v[0] * X[1] - v[1] * X[0]]
    P = [c * X[i] + s * cross[i] + dot * (1 - c) * v[i] + t[i] for i in range(3)]
    u, q = -P[0] / P[2], -P[1] / P[2]              # the camera looks down -z
    n = u * u + q * q
    scale = f * (1 + k1 * n + k2 * n * n)
    return xp.stack([scale * u - seen[0], scale * q - seen[1]])


class Problem:
    """A synthetic bundle adjustment: the true parameters, every observation's camera and
    point, its parameter indices ``(n_obs, 12)`` and what it saw (with ``noise`` pixels
    of Gaussian noise). Each point is seen at least once; observations are sorted by
    point, then camera."""

    def __init__(self, n_obs, n_cameras, n_points, rng, noise=0.5):
        self.n_cameras, self.n_points = n_cameras, n_points
        cameras = np.column_stack([
            rng.normal(size=(n_cameras, 3)) * rng.uniform(0.05, 0.3, (n_cameras, 1)),
            rng.uniform(-1.0, 1.0, (n_cameras, 2)), -rng.uniform(6.0, 10.0, n_cameras),
            rng.uniform(400.0, 600.0, n_cameras),                       # pixels
            rng.normal(scale=0.05, size=n_cameras), rng.normal(scale=0.01, size=n_cameras)])
        points = rng.uniform(-2.0, 2.0, (n_points, POINT))
        self.truth = np.concatenate([cameras.ravel(), points.ravel()])
        point_of = np.concatenate([np.arange(min(n_obs, n_points)),
                                   rng.integers(0, n_points, max(n_obs - n_points, 0))])
        camera_of = rng.integers(0, n_cameras, n_obs)
        order = np.lexsort((camera_of, point_of))
        self.camera_of, self.point_of = camera_of[order], point_of[order]
        self.index = np.column_stack([self.camera_of[:, None] * CAMERA + np.arange(CAMERA),
                                      CAMERA * n_cameras + self.point_of[:, None] * POINT
                                      + np.arange(POINT)])
        exact = residual(self.truth[self.index].T, np.zeros((2, 1)))
        self.seen = np.ascontiguousarray((exact + rng.normal(scale=noise, size=exact.shape)).T)

    @property
    def n_params(self) -> int:
        return self.truth.size

    def start(self, rng):
        """The true parameters, perturbed: rotations by 0.01 rad, translations and
        points by 0.05, focal lengths by 1%, distortions by 0.005."""
        cams = self.truth[:CAMERA * self.n_cameras].reshape(-1, CAMERA)
        scale = np.array([0.01] * 3 + [0.05] * 3 + [0.0] + [0.005] * 2)
        noisy = cams + rng.normal(size=cams.shape) * scale
        noisy[:, 6] *= 1 + 0.01 * rng.normal(size=self.n_cameras)
        pts = self.truth[CAMERA * self.n_cameras:]
        return np.concatenate([noisy.ravel(), pts + rng.normal(scale=0.05, size=pts.size)])

    def terms(self, method):
        return bd.Terms(residual, self.index, self.n_params, data=(self.seen,), method=method)


def scipy_assembly(blocks, index):
    """The problem's CSR Jacobian from the ``(n_obs, 2, 12)`` blocks by plain SciPy."""
    from scipy.sparse import coo_matrix
    n_obs, m, k = blocks.shape
    rows = np.broadcast_to(np.arange(n_obs * m).reshape(n_obs, m, 1), blocks.shape)
    cols = np.broadcast_to(index[:, None, :], blocks.shape)
    return coo_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())),
                      shape=(n_obs * m, int(index.max()) + 1)).tocsr()


def check(method, rng):
    """Terms' r and J on a small problem against NumPy, plain SciPy assembly of
    batchdiff's blocks, and central differences of the vectorised residual."""
    small = Problem(3000, 20, 400, rng)
    x = small.start(rng)
    r, J = small.terms(method).residuals_and_jacobian(x)
    P = x[small.index]
    np.testing.assert_allclose(r, residual(P.T, small.seen.T).T.ravel(), rtol=1e-12)
    blocks = bd.jacobian(residual, method=method)(P, small.seen)
    ref = scipy_assembly(blocks, small.index)
    ref.resize(J.shape)
    ref.sort_indices()
    got = J.tocsr()
    got.sort_indices()
    assert got.shape == ref.shape and got.nnz == ref.nnz == 24 * len(P), (got.nnz, ref.nnz)
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.data, ref.data, rtol=1e-12, atol=1e-12)
    h = 1e-6 * np.maximum(1.0, np.abs(P))
    for j in range(P.shape[1]):
        step = np.zeros(P.shape[1])
        step[j] = 1.0
        hi = residual((P + h * step).T, small.seen.T)
        lo = residual((P - h * step).T, small.seen.T)
        diff = ((hi - lo) / (2 * h[:, j])).T
        np.testing.assert_allclose(blocks[:, :, j], diff, rtol=1e-5,
                                   atol=1e-6 * np.abs(blocks).max())


def jax_jacobian():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax.jit(jax.vmap(jax.jacfwd(lambda p, seen: residual(p, seen, jnp))))


class Alternating:
    """Two parameter vectors in turn: Terms keeps its latest evaluation, keyed by the
    parameters, so a timed call must not see the same ones twice in a row."""

    def __init__(self, x, rng):
        self.xs, self.k = (x, x + 1e-9 * rng.normal(size=x.size)), 0

    def __call__(self):
        self.k ^= 1
        return self.xs[self.k]


def settle(calls, rounds=4):
    """Run every call a few times, wait for background compiles, run them again, so
    that ``method="auto"`` has chosen what it runs."""
    for _ in range(rounds):
        for call in calls:
            call()
    bd.kernels.warmup.wait()
    for call in calls:
        call()


def measure(problem, x, method, repeats, rng) -> list:
    terms = problem.terms(method)
    nxt = Alternating(x, rng)
    P = x[problem.index]
    seen = problem.seen
    jac = bd.jacobian(residual, method=method)
    fused = bd.value_and_jacobian(residual, method=method, sparse=True)
    blocks = resident((len(P), 2, 12), P.dtype)
    gathered = resident(P.shape, P.dtype)
    calls = {
        "per-observation Jacobians, bd.jacobian, out=": lambda: jac(P, seen, out=blocks),
        "per-observation Jacobians, bd.jacobian": lambda: jac(P, seen),
        "bd.value_and_jacobian(sparse=True) (Terms' kernel)": lambda: fused(P, seen),
        "Terms.jacobian (assembled CSR)": lambda: terms.jacobian(nxt()),
        "Terms.residuals_and_jacobian": lambda: terms.residuals_and_jacobian(nxt()),
        "gather: params[index]": lambda: x[problem.index],
        "gather: np.take(params, index, out=)": lambda: np.take(x, problem.index,
                                                                out=gathered),
        "bd.jacobian, out= + coo_matrix(...).tocsr()":
            lambda: scipy_assembly(jac(P, seen, out=blocks), problem.index),
    }
    jfn = jax_jacobian()
    if jfn is not None:
        import jax.numpy as jnp
        Pj, seenj = jnp.asarray(P), jnp.asarray(seen)
        mine = jac(P, seen)
        np.testing.assert_allclose(np.asarray(jfn(Pj, seenj)), mine, rtol=1e-9,
                                   atol=1e-12 * np.abs(mine).max())
        calls["JAX jit(vmap(jacfwd(residual)))"] = lambda: jfn(Pj, seenj).block_until_ready()
    settle(list(calls.values())[:5])
    times = dict(zip(calls, fastest_interleaved(list(calls.values()), repeats=repeats)))
    # gauss_newton multiplies JᵀJ in SciPy, far slower than the rest: fewer turns
    r, J = terms.residuals_and_jacobian(x)
    gn = {"Terms.gauss_newton (r, JᵀJ, Jᵀr)": lambda: terms.gauss_newton(nxt()),
          "Jᵀr of an assembled J (SciPy)": lambda: J.T @ r}
    times.update(zip(gn, fastest_interleaved(list(gn.values()), repeats=max(2, repeats // 3))))
    return times


def solve(problem, x0, method, iterations):
    from scipy.optimize import least_squares
    terms = problem.terms(method)
    cost = 0.5 * float(np.sum(terms.residuals(x0) ** 2))
    truth = 0.5 * float(np.sum(terms.residuals(problem.truth) ** 2))
    start = time.perf_counter()
    fit = least_squares(terms.residuals, x0, jac=terms.jacobian, method="trf",
                        tr_solver="lsmr", x_scale="jac", max_nfev=iterations, verbose=0)
    seconds = time.perf_counter() - start
    return [f"least_squares(method=\"trf\", tr_solver=\"lsmr\", x_scale=\"jac\", "
            f"max_nfev={iterations}), jac= Terms.jacobian: cost {cost:.4g} -> {fit.cost:.4g} "
            f"(at the true parameters {truth:.4g}) in {seconds:.2f} s, "
            f"{fit.nfev} residual and {fit.njev} Jacobian evaluations"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--cameras", type=int, help="default: observations / 500")
    parser.add_argument("--points", type=int, help="default: observations / 10")
    parser.add_argument("--method", default="auto", help="batchdiff's method= (default auto)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--solve", action="store_true",
                        help="also run least_squares from a perturbed start")
    parser.add_argument("--iterations", type=int, default=10,
                        help="least_squares' max_nfev with --solve")
    args = parser.parse_args(argv)
    n_obs = args.observations
    n_cameras = args.cameras or max(n_obs // 500, 4)
    n_points = args.points or max(n_obs // 10, 4)
    rng = np.random.default_rng(0)
    check(args.method, rng)
    problem = Problem(n_obs, n_cameras, n_points, rng)
    x = problem.start(rng)
    size = (f"{n_obs:,} observations, {n_cameras:,} cameras x {CAMERA} + {n_points:,} "
            f"points x {POINT} = {problem.n_params:,} parameters; J {2 * n_obs:,} x "
            f"{problem.n_params:,} with {24 * n_obs:,} non-zeros")
    print(size, flush=True)
    times = measure(problem, x, args.method, args.repeats, rng)
    base = min(times["per-observation Jacobians, bd.jacobian, out="],
               times["per-observation Jacobians, bd.jacobian"])
    lines = [measured_line("bundle_adjustment.py", f"float64, method={args.method!r}; "
                           f"{size}. ms per call, the fastest of {args.repeats} calls "
                           "taking turns (gauss_newton and Jᵀr: of fewer); the last "
                           "column: time / the faster bd.jacobian row (the per-observation "
                           "Jacobians alone)"), "",
             *table_head("what", "ms", "/ Jacobians alone")]
    for name, t in times.items():
        cells = [name, f"{t * 1e3:.1f}", f"{t / base:.2f}"]
        print(" | ".join(cells), flush=True)
        lines.append("| " + " | ".join(cells) + " |")
    ratio = times["Terms.jacobian (assembled CSR)"] / base
    lines += ["", f"Assembled / per-observation Jacobians alone: {ratio:.2f}"]
    print(lines[-1], flush=True)
    if args.solve:
        lines += ["", *solve(problem, x, args.method, args.iterations)]
        print(lines[-1], flush=True)
    print(write_result("bundle_adjustment.md", lines))


if __name__ == "__main__":
    main()
