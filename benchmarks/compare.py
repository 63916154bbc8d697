"""Compare batchdiff with hand-written kernels, JAX and PyTorch on the same problems.

    python benchmarks/compare.py                 # CPU, every problem, B from problems.py
    python benchmarks/compare.py --quick         # fewer repeats, smaller batches
    python benchmarks/compare.py --gpu           # GPU: CuPy back end vs JAX and torch.func

Every method runs on the same data in the same process; each result is checked against
the hand-written analytic kernel (CPU) or batchdiff's reference interpreter (GPU) and a
mismatch is reported. Times are the fastest and the median of several calls after a
first call, the methods taking turns call by call; the first call (tracing, AD,
compilation, with the kernel cache as it is) is reported too. ``method="auto"`` is timed
once it has settled (its kernel compiled, its race run), as in a long job. The markdown table and a
PNG plot go to ``benchmarks/results/``.

On the CPU the methods are the hand-written kernel into a reused buffer and into a new
array each call (``handwritten.py``), batchdiff's executors, batchdiff ``auto`` with and
without ``out=``, dense and ``sparse=True`` (a Jacobian or Hessian; a gradient is dense),
and JAX and torch.func where installed.
Each is reported as a ratio to its baseline in the output-memory targets (``baseline``),
the targets are checked (``SPEED_TARGETS``), and ``memory.py`` measures peak memory in
fresh processes (``--no-memory`` skips it).
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
import handwritten as hw  # noqa: E402
import memory  # noqa: E402
from problems import (  # noqa: E402
    AUTO, AUTO_OUT, PROBLEMS, RESULTS_DIR, SPARSE, SPARSE_OUT, table_head)


# -- the contenders ------------------------------------------------------------------

def cpu_methods(problem, X):
    """name -> call of every method on the CPU, the baselines first."""
    calls = {name: problem.method(name, X) for name in (hw.REUSED, hw.ALLOCATING)}
    for executor in ("compiled", "replay"):
        calls[f"batchdiff {executor}"] = problem.derivative(method=executor)
    calls.update((name, problem.method(name, X)) for name in problem.methods
                 if name not in calls)
    for name, make in (("JAX jit(vmap)", jax_method), ("torch.func vmap", torch_method)):
        fn = make(problem)
        if fn is not None:
            calls[name] = fn
    return calls


# A method's time is reported as a ratio to the hand-written kernel that does the same
# with its output: a reused buffer for out= and for sparse results (the targets ask
# sparse to beat the dense speed of light), a new array for the methods that allocate.
REUSED_BASELINE = {hw.REUSED, hw.ALLOCATING, AUTO_OUT, SPARSE, SPARSE_OUT}


def baseline(method) -> str:
    return hw.REUSED if method in REUSED_BASELINE else hw.ALLOCATING


# (problem, method, "faster": at least that many times faster than its baseline, or
# "within": at most that multiple of its baseline's time); "within 1.5" for AUTO holds
# for every problem
SPEED_TARGETS = [
    ("Lorenz-96 n=40", SPARSE_OUT, "faster", 5.0),
    ("Lorenz-96 n=40", SPARSE, "faster", 5.0),
    ("Rosenbrock n=100", SPARSE_OUT, "faster", 20.0),
    ("Rosenbrock n=100", SPARSE, "faster", 20.0),
    ("Rosenbrock n=10", AUTO_OUT, "within", 1.2),
    ("Lorenz-96 n=40", AUTO_OUT, "within", 1.2),
] + [(p.name, AUTO, "within", 1.5) for p in PROBLEMS]


# batchdiff's transform -> the name of JAX's and of torch.func's
TRANSFORMS = {"grad": "grad", "jacobian": "jacfwd", "hessian": "hessian"}


def jax_function(problem):
    """``jit(vmap(grad, jacfwd or hessian))`` of the problem, or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    derivative = getattr(jax, TRANSFORMS[problem.transform])
    return jax.jit(jax.vmap(derivative(lambda x: problem.fn(x, jnp))))


def torch_function(problem):
    """``torch.func.vmap(grad, jacfwd or hessian)`` of the problem, or None without
    PyTorch."""
    try:
        import torch.func
    except ImportError:
        return None
    derivative = getattr(torch.func, TRANSFORMS[problem.transform])
    return torch.func.vmap(derivative(lambda x: _torch_fn(problem, x)))


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
        tanh = staticmethod(torch.tanh)
        # constants (the MLP's weights) onto x's device, as torch does not move them
        asarray = staticmethod(lambda a, dtype=None: torch.as_tensor(a, dtype=dtype,
                                                                     device=x.device))
    return problem.fn(x, TorchNumPy)


# -- CPU comparison ------------------------------------------------------------------

def dense(result):
    """A result as a dense NumPy array (a sparse one through ``to_dense``)."""
    return result.to_dense() if isinstance(result, bd.SparseResult) else np.asarray(result)


def compare_cpu(quick=False, repeats=7, only=None):
    """Time every contender on every problem, round-robin.

    The calls of the different methods alternate (one call each per round), so that
    they share the machine's state: the run time of a large batch depends on how fast
    the OS hands out fresh pages for its output, which drifts during a run. Each
    method's first result (for ``out=``, already in the reused buffer) is checked,
    outside the timed calls.
    """
    rng = np.random.default_rng(0)
    rows = []
    for problem in PROBLEMS:
        if only and only.lower() not in problem.name.lower():
            continue
        batch = problem.batch // 10 if quick else problem.batch
        X = problem.points(batch, rng)
        contenders = cpu_methods(problem, X)
        expected = problem.method(hw.ALLOCATING, X)(X)
        scale = max(float(np.max(np.abs(expected))), 1e-300)
        first, errors, times = {}, {}, {name: [] for name in contenders}
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            result = fn(X)
            first[name] = time.perf_counter() - t0
            errors[name] = float(np.max(np.abs(dense(result) - expected))) / scale
            del result
        del expected
        settle(contenders, X, batch)
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
            print(f"  {problem.name:24s} {name:28s} first {first[name]:8.3f}s  "
                  f"run min {row[name][1] * 1e3:9.2f} ms  median {row[name][3] * 1e3:9.2f} ms"
                  f"  rel.err {errors[name]:.1e}", flush=True)
        rows.append(row)
    return rows


def settle(contenders, X, batch):
    """Call the ``method="auto"`` contenders until they have settled, as in a long job.

    ``auto`` starts on replay, compiles a tape's kernel once the calls with it have seen
    ``COMPILE_MIN_POINTS`` points, then races the two executors over a few calls of each
    kind (fresh or reused output): timed before that, it would be timed starting up.
    """
    from batchdiff.kernels.numba_exec import COMPILE_MIN_POINTS, _Race
    auto = [fn for name, fn in contenders.items() if name.startswith("batchdiff")
            and name not in ("batchdiff compiled", "batchdiff replay")]
    for _ in range(-(-COMPILE_MIN_POINTS // batch) + 2 * _Race.SAMPLES + 1):
        for fn in auto:
            fn(X)


KEYS = ("problem", "transform", "B")


def methods_of(rows) -> list:
    """The methods measured in ``rows``, in the order first met."""
    methods = []
    for r in rows:
        methods += [m for m in r if m not in methods and m not in KEYS]
    return methods


def ratio(row, method) -> float:
    """The method's fastest time over its baseline's fastest."""
    return row[method][1] / row[baseline(method)][1]


def markdown(rows, title):
    methods = methods_of(rows)
    lines = [f"### {title}", "",
             "Run time per batch in ms: the fastest of several calls after the first, the "
             "methods taking turns; in brackets the ratio to the baseline of the targets: "
             f"*{hw.REUSED}* for `out=`, the sparse results and *{hw.ALLOCATING}*, and "
             f"*{hw.ALLOCATING}* for the methods that allocate their output. On a shared "
             "VM a call's time varies with how fast the OS hands out pages for its output, "
             "so the medians (second table) are noisier. First calls (trace, AD, compile) "
             "last.", "",
             *table_head("problem", "B", *methods)]
    for r in rows:
        cells = []
        for m in methods:
            if m in r:
                t, err = r[m][1], r[m][2]
                flag = "" if err < 1e-6 else f" (err {err:.0e}!)"
                cells.append(f"{t * 1e3:.2f} ({ratio(r, m):.2f}x){flag}")
            else:
                cells.append("n/a")
        lines.append(f"| {r['problem']} {r['transform']} | {r['B']:,} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Median ms per batch:", "",
              *table_head("problem", *methods)]
    for r in rows:
        lines.append(f"| {r['problem']} | " + " | ".join(
            f"{r[m][3] * 1e3:.2f}" if m in r else "n/a" for m in methods) + " |")
    lines += ["", "First call in seconds (tracing, AD and, for Numba, compiling or loading "
              "kernels; the kernel cache as it was; for `out=`, the buffer exists already):",
              "", *table_head("problem", *methods)]
    for r in rows:
        lines.append(f"| {r['problem']} | " + " | ".join(
            f"{r[m][0]:.3f}" if m in r else "n/a" for m in methods) + " |")
    jax_ratios = [r["JAX jit(vmap)"][1] / r[AUTO][1] for r in rows
                  if "JAX jit(vmap)" in r and AUTO in r]
    if jax_ratios:
        gm = float(np.exp(np.mean(np.log(jax_ratios))))
        lines += ["", f"Geometric mean speed-up of batchdiff (auto) over JAX: {gm:.1f}x"]
    return "\n".join(lines) + "\n"


def speed_targets(rows) -> list:
    """``(target, problem, measured, met)`` of each of ``SPEED_TARGETS`` that was run."""
    found = []
    for problem, method, how, bound in SPEED_TARGETS:
        row = next((r for r in rows if r["problem"] == problem and method in r), None)
        if row is None:
            continue
        x = ratio(row, method)
        if how == "faster":
            target = f"{method}: >= {bound:g}x faster than {baseline(method)}"
            found.append((target, problem, f"{1 / x:.1f}x faster", 1 / x >= bound))
        else:
            target = f"{method}: <= {bound:g}x {baseline(method)}"
            found.append((target, problem, f"{x:.2f}x", x <= bound))
    return found


def targets_markdown(rows, memory_rows, quick) -> str:
    lines = ["### Targets (output memory)", ""]
    if quick:
        lines += ["A quick run (batches / 10, fewer calls): not the sizes the targets are "
                  "set at.", ""]
    lines += ["| target | problem | measured | |", "|---|---|---|---|"]
    for target, problem, measured, met in speed_targets(rows) + memory.targets(memory_rows):
        lines.append(f"| {target} | {problem} | {measured} | {'met' if met else 'missed'} |")
    return "\n".join(lines) + "\n"


def plot(rows, path, title):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = methods_of(rows)
    fig, ax = plt.subplots(figsize=(13, 5))
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
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batches / 10, fewer repeats")
    parser.add_argument("--gpu", action="store_true", help="GPU comparison (needs CuPy and a GPU)")
    parser.add_argument("--only", help="run the problems whose name contains this")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurements (memory.py)")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory for the table and plot")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.gpu:
        from compare_gpu import main as gpu_main
        return gpu_main(args.out, quick=args.quick, only=args.only)
    rows = compare_cpu(quick=args.quick, repeats=3 if args.quick else 9, only=args.only)
    memory_rows = [] if args.no_memory else memory.measure_all(args.quick, args.only)
    title = f"CPU, float64 ({machine()})"
    text = markdown(rows, title) + "\n" + targets_markdown(rows, memory_rows, args.quick)
    if memory_rows:
        text += "\n### Peak memory\n\n" + memory.markdown(memory_rows)
    command = "python benchmarks/compare.py" + " --quick" * args.quick
    with open(os.path.join(args.out, "cpu.md"), "w") as f:
        f.write(f"Measured with `{command}` on {time.strftime('%Y-%m-%d')}.\n\n" + text)
    plot(rows, os.path.join(args.out, "cpu.png"), title)
    print(text)
    bad = [(r["problem"], m) for r in rows for m in r if m not in KEYS and r[m][2] > 1e-6]
    bad += [(r["problem"], r["method"]) for r in memory_rows if "error" in r]
    if bad:
        print("MISMATCH or FAILED:", bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
