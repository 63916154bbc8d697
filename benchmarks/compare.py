"""Compare batchdiff with hand-written kernels, JAX and PyTorch on the same problems.

    python benchmarks/compare.py                 # CPU, every problem, B from problems.py
    python benchmarks/compare.py --quick         # fewer repeats, smaller batches
    python benchmarks/compare.py --gpu           # GPU: CuPy back end vs JAX and torch.func

Every method runs on the same data in the same process; each result is checked against
the hand-written analytic kernel (CPU) or batchdiff's reference interpreter (GPU) and a
mismatch is reported. Times are the median of several calls after a first call, the
methods taking turns call by call; the first call (tracing, AD, compilation, with the
kernel cache as it is) is reported too. The markdown table and a
PNG plot go to ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# method="auto" compiles in this process (after its first calls), not in a background
# process that would share the cores with the timed runs
os.environ.setdefault("BATCHDIFF_BACKGROUND_COMPILE", "0")

import batchdiff as bd  # noqa: E402
from problems import PROBLEMS  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# -- the contenders ------------------------------------------------------------------

def batchdiff_methods(problem):
    make = getattr(bd, problem.transform)
    f = problem.fn
    return {
        "batchdiff compiled": make(f, method="compiled"),
        "batchdiff replay": make(f, method="replay"),
        "batchdiff auto": make(f),
    }


def jax_function(problem):
    """``jit(vmap(hessian or jacfwd))`` of the problem, or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    derivative = jax.hessian if problem.transform == "hessian" else jax.jacfwd
    return jax.jit(jax.vmap(derivative(lambda x: problem.fn(x, jnp))))


def torch_function(problem):
    """``torch.func.vmap(hessian or jacfwd)`` of the problem, or None without PyTorch."""
    try:
        from torch.func import hessian, jacfwd, vmap
    except ImportError:
        return None
    derivative = hessian if problem.transform == "hessian" else jacfwd
    return vmap(derivative(lambda x: _torch_fn(problem, x)))


def jax_method(problem):
    fn = jax_function(problem)
    return None if fn is None else (lambda X: np.asarray(fn(X).block_until_ready()))


def torch_method(problem):
    fn = torch_function(problem)
    if fn is None:
        return None
    import torch
    return lambda X: fn(torch.from_numpy(X)).numpy()


def _torch_fn(problem, x):
    import torch

    class TorchNumPy:                       # the few names problems.py uses, in torch
        sum = staticmethod(torch.sum)
        roll = staticmethod(lambda a, k: torch.roll(a, k))
        stack = staticmethod(torch.stack)
        cos = staticmethod(torch.cos)
        sin = staticmethod(torch.sin)
    return problem.fn(x, TorchNumPy)


# -- CPU comparison ------------------------------------------------------------------

def compare_cpu(quick=False, repeats=7, only=None):
    """Time every contender on every problem, round-robin.

    The calls of the different methods alternate (one call each per round), so that
    they share the machine's state: the run time of a large batch depends on how fast
    the OS hands out fresh pages for its output, which drifts during a run.
    """
    rng = np.random.default_rng(0)
    rows = []
    for problem in PROBLEMS:
        if only and only.lower() not in problem.name.lower():
            continue
        batch = problem.batch // 10 if quick else problem.batch
        X = problem.points(batch, rng)
        contenders = {"hand-written Numba": problem.handwritten}
        contenders.update(batchdiff_methods(problem))
        for name, make in (("JAX jit(vmap)", jax_method), ("torch.func vmap", torch_method)):
            fn = make(problem)
            if fn is not None:
                contenders[name] = fn
        expected = problem.handwritten(X)
        scale = max(float(np.max(np.abs(expected))), 1e-300)
        first, errors, times = {}, {}, {name: [] for name in contenders}
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            result = fn(X)
            first[name] = time.perf_counter() - t0
            errors[name] = float(np.max(np.abs(np.asarray(result) - expected))) / scale
            del result
        for r in range(repeats):
            for name, fn in contenders.items():
                if "torch" in name and r >= 3:      # slow, and steady
                    continue
                t0 = time.perf_counter()
                fn(X)
                times[name].append(time.perf_counter() - t0)
        row = {"problem": problem.name, "transform": problem.transform, "B": batch}
        for name in contenders:
            row[name] = (first[name], min(times[name]), errors[name],
                         statistics.median(times[name]))
            print(f"  {problem.name:24s} {name:22s} first {first[name]:8.3f}s  "
                  f"run min {row[name][1] * 1e3:9.2f} ms  median {row[name][3] * 1e3:9.2f} ms"
                  f"  rel.err {errors[name]:.1e}", flush=True)
        rows.append(row)
    return rows


def markdown(rows, title, reference="hand-written Numba"):
    methods = [m for m in rows[0] if m not in ("problem", "transform", "B")]
    for r in rows[1:]:
        methods += [m for m in r if m not in methods and m not in ("problem", "transform", "B")]
    lines = [f"### {title}", "",
             "Run time per batch in ms: the fastest of several calls after the first, the "
             f"methods taking turns; in brackets the ratio to {reference}. On a shared VM a "
             "call's time varies with how fast the OS hands out pages for its output, so the "
             "medians (second table) are noisier. First calls (trace, AD, compile) last.", "",
             "| problem | B | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for r in rows:
        ref = r[reference][1]
        cells = []
        for m in methods:
            if m in r:
                first, t, err, _ = r[m]
                flag = "" if err < 1e-6 else f" (err {err:.0e}!)"
                cells.append(f"{t * 1e3:.2f} ({t / ref:.2f}x){flag}")
            else:
                cells.append("n/a")
        lines.append(f"| {r['problem']} {r['transform']} | {r['B']:,} | " + " | ".join(cells) + " |")
    lines += ["", "Median ms per batch:", "",
              "| problem | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for r in rows:
        lines.append(f"| {r['problem']} | " + " | ".join(
            f"{r[m][3] * 1e3:.2f}" if m in r else "n/a" for m in methods) + " |")
    lines += ["", "First call in seconds (tracing, AD and, for Numba, compiling or loading "
              "kernels; the kernel cache as it was):", "",
              "| problem | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for r in rows:
        lines.append(f"| {r['problem']} | " + " | ".join(
            f"{r[m][0]:.3f}" if m in r else "n/a" for m in methods) + " |")
    jax_ratios = [r["JAX jit(vmap)"][1] / r["batchdiff auto"][1] for r in rows
                  if "JAX jit(vmap)" in r and "batchdiff auto" in r]
    if jax_ratios:
        gm = float(np.exp(np.mean(np.log(jax_ratios))))
        lines += ["", f"Geometric mean speed-up of batchdiff (auto) over JAX: {gm:.1f}x"]
    return "\n".join(lines) + "\n"


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = []
    for r in rows:
        methods += [m for m in r if m not in methods and m not in ("problem", "transform", "B")]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        xs = [i + k * width for i, r in enumerate(rows) if m in r]
        ys = [r[m][1] * 1e3 for r in rows if m in r]
        ax.bar(xs, ys, width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([f"{r['problem']}\n{r['transform']}, B={r['B']:,}" for r in rows],
                       fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per batch (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batches / 10, fewer repeats")
    parser.add_argument("--gpu", action="store_true", help="GPU comparison (needs CuPy and a GPU)")
    parser.add_argument("--only", help="run the problems whose name contains this")
    parser.add_argument("--out", default=RESULTS, help="directory for the table and plot")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.gpu:
        from compare_gpu import main as gpu_main
        return gpu_main(args.out, quick=args.quick)
    rows = compare_cpu(quick=args.quick, repeats=3 if args.quick else 9, only=args.only)
    title = f"CPU, float64 ({machine()})"
    text = markdown(rows, title)
    with open(os.path.join(args.out, "cpu.md"), "w") as f:
        f.write(f"Measured with `python benchmarks/compare.py{' --quick' if args.quick else ''}`"
                f" on {time.strftime('%Y-%m-%d')}.\n\n" + text)
    plot(rows, os.path.join(args.out, "cpu.png"), title)
    print(text)
    bad = [(r["problem"], m) for r in rows for m in r
           if m not in ("problem", "transform", "B") and r[m][2] > 1e-6]
    if bad:
        print("MISMATCH:", bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
