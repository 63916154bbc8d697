"""Peak memory of batchdiff's calls, each case measured in a fresh process.

    python benchmarks/memory.py                 # every case, B from problems.py
    python benchmarks/memory.py --quick         # batches / 10
    python benchmarks/memory.py --only Lorenz   # the problems whose name contains this
    python benchmarks/memory.py --dtype float32 # points and outputs in float32

A full run (no ``--quick`` or ``--only``) writes its tables to
``benchmarks/results/memory_DTYPE.md``.

Two measures of the output-memory targets (``compare.py`` runs them too):

- **loop**: 50 dense calls without ``out=`` of the Lorenz-96 (n = 40) Jacobian (a
  point-by-point kernel) and of the Lennard-Jones and tanh MLP Hessians (tiled kernels),
  each result dropped at once, as a plain loop does; the peak resident size during the
  loop less the resident size before it, next to one output's bytes (1.28 GB for
  Lorenz-96 at B = 100,000). Target: at most one output + 0.5 GB. The same loop of the
  hand-written kernel that allocates its output is the floor: one output. The same
  loops again with ``out=``, one buffer for all 50 calls, next to the hand-written
  kernel writing into a reused buffer (the floor: no growth).
- **call**: one call of each problem's derivative, dense, into a reused buffer
  (``out=``) and sparse (a Jacobian or Hessian: ``bd.grad`` has no sparse result), and
  of the hand-written kernel (``handwritten.py``) both ways: writing into a reused
  buffer (the floor of a call with ``out=``: the interpreter, Numba, the inputs and the
  buffer) and allocating its output (the floor of a call that returns a new result);
  the peak resident size of the whole process during the call, as asv's ``peakmem_``
  counts it, next to the bytes of the output and of the inputs. Target: at most
  1.1 x output + inputs + 0.3 GB (the hand-written kernels are floors, not targets).

Before the measured calls, each process makes ``WARM_CALLS`` calls on the full batch, so
that ``method="auto"`` has loaded (or compiled) its kernels and settled its race
between replay and compiled: what is measured is a steady call, not a compilation.
Run it with the kernel cache warm at these batch sizes (``compare.py`` times every
method first): a kernel that a warm-up call has to compile leaves LLVM's memory in the
process, about 0.17 GB more in every later figure (seen on the sparse Lorenz-96 Jacobian;
0.18 GB on the MLP gradient's tiled kernel, compiled after a printer change: 0.379
against 0.196 GB).

The peak is the kernel's high-water mark of the resident size (``VmHWM`` in
``/proc/self/status``), reset just before the measured calls by writing 5 to
``/proc/self/clear_refs``. ``resource.getrusage``'s ``ru_maxrss`` cannot be reset, and
in a process started from a large one it is wrong from the start: ``subprocess``
starts a child with ``vfork`` + ``exec``, and ``exec`` carries the parent's high-water
mark into the child's ``ru_maxrss`` (a child of a 2 GB parent reports 2 GB on its first
line). Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

import handwritten as hw
import problems

GB = 1e9
WARM_CALLS = 8
LOOP_CALLS = 50
FLOORS = (hw.REUSED, hw.ALLOCATING)    # the hand-written kernels: floors, not targets
LOOP_PROBLEMS = ("Lorenz-96 n=40", "Lennard-Jones 4 atoms", "tanh MLP 8-16-16-1 input")


# -- in the measured process -------------------------------------------------------------

def _status_bytes(field) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024          # "VmHWM:   123456 kB"
    raise RuntimeError(f"/proc/self/status has no {field}: peak memory needs Linux")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _nbytes(result) -> int:
    values = getattr(result, "values", result)          # a SparseResult holds its values
    return int(values.nbytes)


def measure_here(problem_name, method, batch, calls, dtype="float64") -> dict:
    """Run ``calls`` calls of ``method`` after the warm-up; the peak and what it is made of."""
    problem = problems.problem(problem_name)
    X = problem.points(batch, np.random.default_rng(0), dtype=dtype)
    call = problem.method(method, X)
    for _ in range(WARM_CALLS):
        output = _nbytes(call(X))
    _reset_peak()
    before = _status_bytes("VmRSS")
    for _ in range(calls):
        call(X)                         # the result is dropped at once
    return {"problem": problem_name, "method": method, "B": batch, "calls": calls,
            "dtype": dtype, "peak": _status_bytes("VmHWM"), "before": before,
            "output": output, "inputs": int(X.nbytes)}


# -- in the driving process -----------------------------------------------------------------

def measure(problem_name, method, batch, calls=1, dtype="float64") -> dict:
    """``measure_here`` in a fresh Python process; ``error`` set if that process failed."""
    spec = json.dumps([problem_name, method, batch, calls, dtype])
    env = dict(os.environ, BATCHDIFF_BACKGROUND_COMPILE="0")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", spec],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return {"problem": problem_name, "method": method, "B": batch, "calls": calls,
                "dtype": dtype, "error": f"exit status {proc.returncode} {tail}".strip()}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cases(quick=False, only=None, dtype="float64"):
    """``(problem name, method, batch, calls, dtype)`` of every case, the loop first.

    >>> cases(only="Lorenz", dtype="float32")[0]
    ('Lorenz-96 n=40', 'batchdiff auto', 100000, 50, 'float32')
    """
    scale = 10 if quick else 1
    chosen = [p for p in problems.PROBLEMS if not only or only.lower() in p.name.lower()]
    loop = [(p.name, method, p.batch // scale, LOOP_CALLS, dtype)
            for p in chosen if p.name in LOOP_PROBLEMS
            for method in (problems.AUTO, hw.ALLOCATING, problems.AUTO_OUT, hw.REUSED)
            if method in p.methods]
    return loop + [(p.name, method, p.batch // scale, 1, dtype) for p in chosen
                   for method in (problems.AUTO, problems.AUTO_OUT, problems.SPARSE, *FLOORS)
                   if method in p.methods]


def measure_all(quick=False, only=None, echo=True, dtype="float64") -> list:
    rows = []
    for case in cases(quick, only, dtype):
        rows.append(measure(*case))
        if echo:
            print("  " + describe(rows[-1]), flush=True)
    return rows


# -- the targets ------------------------------------------------------------------------

def is_loop(row) -> bool:
    return row["calls"] > 1


def limit(row) -> float:
    """The most bytes the row's target allows: of the loop's growth, or of a call's peak."""
    if is_loop(row):
        return row["output"] + 0.5 * GB
    return 1.1 * row["output"] + row["inputs"] + 0.3 * GB


def measured(row) -> float:
    return row["peak"] - row["before"] if is_loop(row) else row["peak"]


def describe(row) -> str:
    what = (f"{row['problem']}, {row['method']}, B={row['B']:,}, "
            f"{row.get('dtype', 'float64')}, {row['calls']} call(s)")
    if "error" in row:
        return f"{what}: failed ({row['error']})"
    return (f"{what}: peak {row['peak'] / GB:.3f} GB (before {row['before'] / GB:.3f}), "
            f"output {row['output'] / GB:.3f} GB, inputs {row['inputs'] / GB:.3f} GB")


def targets(rows) -> list:
    """``(target, problem, measured, met)`` of the loop and of batchdiff's calls."""
    found = []
    for r in rows:
        if r["method"] in FLOORS:
            continue
        if is_loop(r):
            target = (f"{r['calls']} calls of {r['method']}: peak RSS growth "
                      "<= 1 output + 0.5 GB")
        else:
            target = f"one call of {r['method']}: peak RSS <= 1.1 x output + inputs + 0.3 GB"
        if "error" in r:
            found.append((target, r["problem"], f"failed: {r['error']}", False))
            continue
        found.append((target, r["problem"], f"{measured(r) / GB:.3f} GB (limit "
                      f"{limit(r) / GB:.3f} GB)", measured(r) <= limit(r)))
    return found


def markdown(rows) -> str:
    """The results' Markdown: the loop's table, then the single calls' table.

    >>> row = dict(problem="p", B=10, method="compiled", calls=1, peak=1e9, before=1e8,
    ...            output=5e8, inputs=1e7)
    >>> print(markdown([row]).splitlines()[-1])
    | p | 10 | compiled | 1.000 | 0.100 | 0.500 | 0.010 | <= 0.860 | missed |
    """
    loop = [r for r in rows if is_loop(r)]
    calls = [r for r in rows if not is_loop(r)]
    dtypes = sorted({r.get("dtype", "float64") for r in rows})
    lines = [] if dtypes == ["float64"] else [f"Points and outputs in {', '.join(dtypes)}.", ""]
    if loop:
        lines += [f"Peak resident size of a fresh process running {LOOP_CALLS} dense calls "
                  "(results dropped; with `out=`, into one buffer), above its size before "
                  "the loop, in GB; "
                  "target: at most one output + 0.5 GB:", "",
                  *problems.table_head("problem", "B", "growth in the loop", "one output",
                                       "target", "")]
        lines += [_line([f"{r['problem']} {r['method']}", f"{r['B']:,}"], r,
                        [measured(r), r["output"]]) for r in loop]
        lines.append("")
    if calls:
        lines += ["Peak resident size of the whole process (as asv's `peakmem_`) during one "
                  "call, in a fresh process after warm-up calls, in GB; target: at most "
                  "1.1 x output + inputs + 0.3 GB:", "",
                  *problems.table_head("problem", "B", "method", "peak", "before the call",
                                       "output", "inputs", "target", "")]
        lines += [_line([r["problem"], f"{r['B']:,}", r["method"]], r,
                        [r["peak"], r["before"], r["output"], r["inputs"]]) for r in calls]
    return "\n".join(lines) + "\n"


def _line(head, row, sizes) -> str:
    """A table line: ``head``, then ``sizes`` in GB and the verdict, or the failure."""
    if "error" in row:
        cells = [f"failed: {row['error']}"] + [""] * len(sizes)
    elif row["method"] in FLOORS:
        cells = [f"{b / GB:.3f}" for b in sizes] + ["", "floor"]
    else:
        cells = [f"{b / GB:.3f}" for b in sizes] + [
            f"<= {limit(row) / GB:.3f}", "met" if measured(row) <= limit(row) else "missed"]
    return "| " + " | ".join(head + cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batches / 10")
    parser.add_argument("--only", help="run the problems whose name contains this")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="dtype of the points and outputs (default float64)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)   # the measured process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_here(*json.loads(args.measure))))
        return 0
    rows = measure_all(args.quick, args.only, dtype=args.dtype)
    print(markdown(rows))
    if not (args.quick or args.only):
        flags = "" if args.dtype == "float64" else f" --dtype {args.dtype}"
        problems.write_result(f"memory_{args.dtype}.md", [
            problems.measured_line("memory.py" + flags, "one process per case.", sep="; "),
            "", markdown(rows).rstrip("\n")])
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
