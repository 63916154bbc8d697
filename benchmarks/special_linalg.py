"""Special functions and linear algebra on traced values, against JAX.

    python benchmarks/special_linalg.py
    python benchmarks/special_linalg.py --points 10000 --only solve

- the Hessian, in its three parameters, of a Poisson plus negative-binomial
  log-likelihood of one count (``scipy.special.gammaln`` and ``xlogy``: digamma and
  trigamma in the Hessian), B points;
- the Jacobian of ``np.linalg.solve``, ``inv`` and ``det`` of a 6 x 6 matrix (and, for
  solve, a right-hand side) built from the point's 42 inputs;

each by batchdiff (``method="auto"`` settled, allocating; ``method="compiled"`` with
``out=`` a buffer made once, for tapes below ``COMPILE_MAX_OPS`` instructions: the
inverse's Jacobian, 28,000, takes minutes to compile, and auto runs it on the replay
interpreter) and by JAX ``jit(vmap(jacfwd))`` / ``jit(vmap(hessian))`` when JAX is
installed, each the fastest of several calls taking turns. The table goes to
``benchmarks/results/special_linalg.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from problems import (fastest_interleaved, measured_line, resident, table_head,  # noqa: E402
                      write_result)

N = 6
COMPILE_MAX_OPS = 10_000


def likelihood(t, xp=np, special=None):
    """Poisson and negative-binomial log-likelihoods of the count t[3] with covariates
    t[4:6]: rate exp(θ0 x0 + θ1 x1), dispersion exp(θ2); θ = t[:3]."""
    if special is None:
        from scipy import special
    y, x0, x1 = t[3], t[4], t[5]
    log_mu = t[0] * x0 + t[1] * x1
    mu, r = xp.exp(log_mu), xp.exp(t[2])
    poisson = y * log_mu - mu - special.gammaln(y + 1.0)
    negbin = (special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1.0)
              + r * xp.log(r / (r + mu)) + special.xlogy(y, mu / (r + mu)))
    return poisson + negbin


def _matrix(a, xp):
    return a[:N * N].reshape(N, N) + N * xp.eye(N)


def solve6(a, xp=np):
    return xp.linalg.solve(_matrix(a, xp), a[N * N:])


def inv6(a, xp=np):
    return xp.linalg.inv(_matrix(a, xp)).reshape(-1)


def det6(a, xp=np):
    return xp.linalg.det(_matrix(a, xp))


def _likelihood_points(batch, rng):
    theta = rng.normal(0.0, 0.4, (batch, 3))
    y = rng.poisson(4.0, (batch, 1)).astype(float)
    return np.hstack([theta, y, rng.normal(0.0, 1.0, (batch, 2))])


def _matrix_points(batch, rng, width):
    return rng.uniform(-1.0, 1.0, (batch, width))


# name: (function, batchdiff transform, JAX transform, argnums of the Hessian, points)
PROBLEMS = {
    "likelihood Hessian (3 parameters)": (likelihood, "hessian", "hessian", _likelihood_points),
    "solve 6x6, Jacobian": (solve6, "jacobian", "jacfwd",
                            lambda b, r: _matrix_points(b, r, N * N + N)),
    "inv 6x6, Jacobian": (inv6, "jacobian", "jacfwd", lambda b, r: _matrix_points(b, r, N * N)),
    "det 6x6, gradient": (det6, "grad", "grad", lambda b, r: _matrix_points(b, r, N * N)),
}


def jax_call(name, fn, transform):
    try:
        import jax
        import jax.numpy as jnp
        import jax.scipy.special as jsp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    kw = {"xp": jnp, "special": jsp} if name.startswith("likelihood") else {"xp": jnp}
    if name.startswith("likelihood"):
        def per_point(theta, data):
            return getattr(jax, transform)(lambda th: fn(jnp.concatenate([th, data]), **kw))(theta)
        return jax.jit(jax.vmap(per_point))
    return jax.jit(jax.vmap(getattr(jax, transform)(lambda a: fn(a, **kw))))


def measure(name, batch, rng) -> list:
    fn, transform, jax_transform, points = PROBLEMS[name]
    X = points(batch, rng)
    likelihood_problem = name.startswith("likelihood")
    if likelihood_problem:
        theta, data = X[:, :3], X[:, 3:]
        f = lambda th, d: fn(np.concatenate([th, d]))  # noqa: E731
        make = lambda **kw: getattr(bd, transform)(f, argnums=0, **kw)  # noqa: E731
        args = (theta, data)
    else:
        make = lambda **kw: getattr(bd, transform)(fn, **kw)  # noqa: E731
        args = (X,)
    tape = make(backend="numpy").tape(*args)
    compiled, compile_s = None, None
    if tape.num_ops <= COMPILE_MAX_OPS:
        t0 = time.perf_counter()
        compiled = make(method="compiled")
        compiled(*args)
        compile_s = time.perf_counter() - t0
    ref = make(backend="numpy")(*args)
    auto = make()
    for _ in range(10):
        auto(*args)
    bd.kernels.warmup.wait()
    for _ in range(10):
        auto(*args)
    np.testing.assert_allclose(auto(*args), ref, rtol=1e-10, atol=1e-12)
    calls = {"bd auto": lambda: auto(*args)}
    if compiled is not None:
        out = resident(ref.shape, ref.dtype)
        calls['bd method="compiled", out='] = lambda: compiled(*args, out=out)
    jfn = jax_call(name, fn, jax_transform)
    if jfn is not None:
        import jax.numpy as jnp
        jargs = tuple(jnp.asarray(a) for a in args)
        got = np.asarray(jfn(*jargs))
        np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-8, atol=1e-10)
        calls["JAX jit(vmap)"] = lambda: jfn(*jargs).block_until_ready()
    times = dict(zip(calls, fastest_interleaved(list(calls.values()), repeats=9)))
    jax_time = times.get("JAX jit(vmap)")
    return [[name, f"{batch:,}", k, f"{t * 1e3:.2f}",
             f"{jax_time / t:.1f}x" if jax_time else "–", f"{tape.num_ops:,}",
             f"{compile_s:.1f}" if compile_s is not None else "–"] for k, t in times.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--only", help="run the problems whose name contains this")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [measured_line("special_linalg.py", "float64; ms per batch, the fastest of 9 calls "
                           "taking turns; JAX's time / this one; the tape's instructions; "
                           "seconds to the first compiled result"), "",
             *table_head("problem", "B", "method", "ms", "JAX / this", "instructions",
                         "compile s")]
    for name in PROBLEMS:
        if args.only and args.only not in name:
            continue
        for cells in measure(name, args.points, rng):
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    print(write_result("special_linalg.md", lines))


if __name__ == "__main__":
    main()
