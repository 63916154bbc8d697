"""Newton steps of stiff kinetics in every cell: in the kernel, against J to memory and LAPACK.

    python benchmarks/solver_steps.py
    python benchmarks/solver_steps.py --points 10000

The implicit Euler residual ``G(y) = y - y_old - h f(y)`` of Robertson's 3-species
system and of a 10-species chain of second-order reactions, at B points; the Newton step
``-J⁻¹G`` per point by

- ``bd.newton_step`` (J formed and solved inside the kernel; ``method="auto"`` and
  ``"compiled"``, allocating or with ``out=`` a buffer made once);
- ``bd.value_and_jacobian`` then ``np.linalg.solve`` (J written to memory, LAPACK's
  batched solve reads it back);
- JAX ``jit(vmap(lambda y: -jnp.linalg.solve(jacfwd(G)(y), G(y))))`` when JAX is installed;

each the fastest of several calls taking turns, after ``method="auto"`` has settled.
The table goes to ``benchmarks/results/solver_steps.md``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from problems import (fastest_interleaved, measured_line, resident, table_head,  # noqa: E402
                      write_result)

H = 0.1
Y_OLD = np.array([0.5, 0.0, 0.0])
RATES = np.logspace(-2, 4, 10)


def robertson(y, xp=np):
    f = xp.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
                  0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                  3e7 * y[1] ** 2])
    return y - xp.asarray(Y_OLD) - H * f


def chain10(y, xp=np):
    """A_i + A_i -> A_(i+1) at rate k_i; the last species is a sink."""
    flux = [RATES[i] * y[i] ** 2 for i in range(9)]
    f = [-2 * flux[0]] + [flux[i - 1] - 2 * flux[i] for i in range(1, 9)] + [flux[8]]
    return y - 0.5 - H * xp.stack(f)


PROBLEMS = {"Robertson 3x3": (robertson, 3), "chain 10x10": (chain10, 10)}


def _points(n, batch, rng):
    return rng.uniform(0.1, 1.0, (batch, n)) * np.where(np.arange(n) == 1, 1e-4, 1.0)


def jax_step(G):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def step(y):
        g = G(y, jnp)
        return -jnp.linalg.solve(jax.jacfwd(lambda z: G(z, jnp))(y), g)

    return jax.jit(jax.vmap(step))


def measure(name, batch, rng) -> list:
    G, n = PROBLEMS[name]
    Y = _points(n, batch, rng)
    step = bd.newton_step(G)
    vj = bd.value_and_jacobian(G)
    for _ in range(10):               # auto settles: compiled, raced
        step(Y)
        vj(Y)
    bd.kernels.warmup.wait()
    for _ in range(10):
        step(Y)
        vj(Y)
    out = resident(Y.shape, Y.dtype)
    value, jac = resident((batch, n), Y.dtype), resident((batch, n, n), Y.dtype)

    def separate():
        F, J = vj(Y, out=(value, jac))
        return -np.linalg.solve(J, F[..., None])[..., 0]

    ref = separate()
    np.testing.assert_allclose(step(Y, out=out), ref, rtol=1e-8, atol=1e-12)
    compiled = bd.newton_step(G, method="compiled")
    out_c = compiled(Y)
    calls = {"bd.newton_step, out=": lambda: step(Y, out=out), "bd.newton_step": lambda: step(Y),
             'bd.newton_step(method="compiled"), out=': lambda: compiled(Y, out=out_c),
             "bd.value_and_jacobian + np.linalg.solve": separate}
    jfn = jax_step(G)
    if jfn is not None:
        import jax.numpy as jnp
        Yj = jnp.asarray(Y)
        np.testing.assert_allclose(np.asarray(jfn(Yj)), ref, rtol=1e-8, atol=1e-12)
        calls["JAX jit(vmap(solve(jacfwd)))"] = lambda: jfn(Yj).block_until_ready()
    times = dict(zip(calls, fastest_interleaved(list(calls.values()), repeats=9)))
    best = min(t for k, t in times.items() if k.startswith("bd.newton_step"))
    return [[name, f"{batch:,}", k, f"{t * 1e3:.2f}", f"{t / best:.1f}x"]
            for k, t in times.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [measured_line("solver_steps.py", "float64; ms per batch, the fastest of 9 "
                           "calls taking turns; the last column: time / the fastest "
                           "bd.newton_step call"), "",
             *table_head("system", "B", "method", "ms", "/ bd.newton_step")]
    for name in PROBLEMS:
        for cells in measure(name, args.points, rng):
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    print(write_result("solver_steps.md", lines))


if __name__ == "__main__":
    main()
