"""Fused transforms against the derivative alone: what the value adds.

    python benchmarks/fused.py
    python benchmarks/fused.py --only Rosenbrock

For each problem of ``problems.PROBLEMS`` with a Jacobian or Hessian: the derivative
alone (``bd.jacobian`` / ``bd.hessian``), the fused ``bd.value_and_jacobian`` /
``bd.value_and_hessian`` (and ``bd.value_grad_and_hessian`` for scalar f), each with
``out=`` buffers made once, compiled kernels, the fastest of several calls taking turns. The table goes to ``benchmarks/results/fused.md``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BATCHDIFF_BACKGROUND_COMPILE", "0")

import batchdiff as bd  # noqa: E402
from problems import (PROBLEMS, fastest_interleaved, measured_line, resident,  # noqa: E402
                      table_head, write_result)

FUSED = {"jacobian": ["value_and_jacobian"],
         "hessian": ["value_and_hessian", "value_grad_and_hessian"]}


def _buffers(result):
    if isinstance(result, tuple):
        return tuple(_buffers(r) for r in result)
    return resident(result.shape, result.dtype)


def _with_out(g, X):
    out = _buffers(g(X))
    return lambda: g(X, out=out)


def rows_of(p, rng):
    X = p.points(p.batch, rng)
    alone = getattr(bd, p.transform)(p.fn, method="compiled")
    calls = {p.transform: _with_out(alone, X)}
    for kind in FUSED[p.transform]:
        if kind == "value_grad_and_hessian" and np.ndim(p.fn(X[0])) != 0:
            continue
        calls[kind] = _with_out(getattr(bd, kind)(p.fn, method="compiled"), X)
    times = dict(zip(calls, fastest_interleaved(list(calls.values()), repeats=9)))
    base = times[p.transform]
    return [[p.name, kind, f"{p.batch:,}", f"{t * 1e3:.2f}", f"{t / base:.2f}"]
            for kind, t in times.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the problems whose name contains this")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [measured_line("fused.py", "float64, compiled kernels, out= buffers made "
                           "once; ms per batch, the fastest of 9 calls taking turns"), "",
             *table_head("problem", "transform", "B", "ms", "/ derivative alone")]
    for p in PROBLEMS:
        if p.transform not in FUSED or (args.only and args.only not in p.name):
            continue
        for cells in rows_of(p, rng):
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    print(write_result("fused.md", lines))


if __name__ == "__main__":
    main()
