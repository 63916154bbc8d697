"""What SciPy's solvers pay per derivative call through ``batchdiff.scipy``.

    python benchmarks/scipy_hooks.py

Microseconds per call of each hook on one point, as the solvers call them (NumPy in,
NumPy or CSR out), beside a JAX ``jit`` function of the same derivative called with
NumPy arrays and returning a NumPy array (when JAX is installed); then the whole
``solve_ivp(method="Radau")`` of Robertson's system to t = 10^5 with each Jacobian and
with SciPy's own finite differences. The table goes to ``benchmarks/results/scipy_hooks.md``.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from problems import measured_line, table_head, write_result  # noqa: E402


def robertson(t, y, xp=np):
    return xp.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
                     0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                     3e7 * y[1] ** 2])


def rosen(x, xp=np):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def per_call(fn, *args, calls=2000) -> float:
    """Microseconds per call, the fastest of 5 runs of ``calls`` calls, after enough
    calls that ``method="auto"`` has settled (a short tape called 1,000 times is
    compiled, in the background)."""
    for _ in range(1500):
        fn(*args)
    bd.kernels.warmup.wait()
    for _ in range(50):
        fn(*args)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def jax_hooks():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)
    jac = jax.jit(jax.jacfwd(lambda y, t: robertson(t, y, jnp)))
    g = jax.jit(jax.grad(lambda x: rosen(x, jnp)))
    H = jax.jit(jax.hessian(lambda x: rosen(x, jnp)))
    return {"ivp_jacobian (dense)": lambda t, y: np.asarray(jac(y, t)),
            "minimize jac": lambda x: np.asarray(g(x)),
            "minimize hess": lambda x: np.asarray(H(x))}


def main():
    y, t, x = np.array([0.9, 2e-5, 0.1]), 1.0, np.linspace(0.1, 0.9, 10)
    d = bd.scipy.minimize_derivatives(rosen)
    hooks = {"ivp_jacobian (dense)": (bd.scipy.ivp_jacobian(robertson), (t, y)),
             "ivp_jacobian (CSR)": (bd.scipy.ivp_jacobian(robertson, sparse=True), (t, y)),
             "minimize jac": (d["jac"], (x,)),
             "minimize hess": (d["hess"], (x,)),
             "minimize hessp": (d["hessp"], (x, x))}
    Y, T, X = y[None], np.array([t]), x[None]
    plain = {"ivp_jacobian (dense)": (bd.jacobian(lambda v, s: robertson(s, v)), (Y, T)),
             "minimize jac": (bd.grad(rosen), (X,)),
             "minimize hess": (bd.hessian(rosen), (X,)),
             "minimize hessp": (bd.hvp(rosen), (X, X))}
    jax = jax_hooks()
    lines = [measured_line("scipy_hooks.py", "float64, microseconds per call on one point "
                           "(fastest of 5 runs of 2,000 calls, once method='auto' has "
                           "settled); the transform itself called on a batch of one "
                           "point made once, what the hook adds to it; JAX: a jit "
                           "function called with NumPy arrays, its result as a NumPy "
                           "array"), "",
             *table_head("hook", "problem", "batchdiff µs", "the transform itself µs",
                         "JAX µs")]
    for name, (fn, args) in hooks.items():
        problem = "Robertson, 3 species" if name.startswith("ivp") else "Rosenbrock n=10"
        ours = per_call(fn, *args)
        own = per_call(plain[name][0], *plain[name][1]) if name in plain else None
        theirs = per_call(jax[name], *args) if name in jax else None
        cells = [name, problem, f"{ours:.1f}", f"{own:.1f}" if own else "-",
                 f"{theirs:.1f}" if theirs else "-"]
        print(" | ".join(cells), flush=True)
        lines.append("| " + " | ".join(cells) + " |")

    from scipy.integrate import solve_ivp
    lines += ["", "`solve_ivp(robertson, (0, 1e5), [1, 0, 0], method=\"Radau\", rtol=1e-6, "
              "atol=1e-10)`, seconds (fastest of 3):", "",
              *table_head("Jacobian", "seconds", "Jacobian calls", "f calls")]
    jacs = {"batchdiff ivp_jacobian": bd.scipy.ivp_jacobian(robertson),
            "batchdiff ivp_jacobian, CSR": bd.scipy.ivp_jacobian(robertson, sparse=True),
            "finite differences (SciPy)": None}
    if jax:
        jacs["JAX jit(jacfwd)"] = jax["ivp_jacobian (dense)"]
    for name, jac in jacs.items():
        best, sol = float("inf"), None
        for _ in range(3):
            start = time.perf_counter()
            sol = solve_ivp(robertson, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau",
                            rtol=1e-6, atol=1e-10, jac=jac)
            best = min(best, time.perf_counter() - start)
        cells = [name, f"{best:.3f}", str(sol.njev), str(sol.nfev)]
        print(" | ".join(cells), flush=True)
        lines.append("| " + " | ".join(cells) + " |")
    print(write_result("scipy_hooks.md", lines))


if __name__ == "__main__":
    main()
