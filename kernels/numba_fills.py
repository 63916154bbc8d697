"""The constant and mirrored outputs of a Numba kernel's point: ``prefill`` and ``finish``.

A point's row of each output leaf is first filled with its most common constant (the
zeros, mostly) by a loop LLVM vectorises, then its computed values are stored, then
``finish`` writes the other constants as runs of equal values and copies the mirrored
positions (a Hessian's other triangle) from tables.
"""
from __future__ import annotations

import collections
import math

import numpy as np

from .printing import py_literal

FILL_SHARE = 4      # a leaf whose most common constant is 1/4 of it is prefilled with it


def fill_value(leaf_consts, width):
    """The constant a leaf's row is prefilled with (its zeros, mostly), or None.

    Filling a whole row is a loop LLVM turns into vector stores; the same constants
    stored one by one, or as many short runs, cost a scalar store each, which bounds
    a dense Hessian (Rosenbrock-10: 73 constants in a row of 100).
    """
    counts = collections.Counter(repr(float(v)) for _, v in leaf_consts)  # 0.0 is not -0.0
    if not counts:
        return None
    text, count = counts.most_common(1)[0]
    return float(text) if count * FILL_SHARE >= width else None


def prefill(fills, widths, leaves, dtype) -> str:
    """``prefill``: each leaf's row set to its fill value, before any other store."""
    body = []
    for j, (value, width) in enumerate(zip(fills, widths)):
        if value is not None:
            body += [f"    for k in range({width}):",
                     f"        o{j}[b, k] = {py_literal(value, dtype)}"]
    return f"\n\n@njit(**_inline)\ndef prefill({leaves}b):\n" + ("\n".join(body) or "    pass")


def finish(consts, dups, fills, leaves, dtype) -> str:
    """``finish``: per leaf, its other constant outputs (as runs of equal values) and copies.

    The tables are unsigned: a signed index from an array gets Numba's negative-index
    check on every store, which keeps LLVM from vectorising the run loops (5x slower
    on the zeros of a Lorenz-96 Jacobian).
    """
    np_dtype = "np.float32" if np.dtype(dtype) == np.float32 else "np.float64"
    tables, body = [], []
    for j, (leaf_consts, leaf_dups) in enumerate(zip(consts, dups)):
        runs = []               # (start, stop, value)
        for k, v in leaf_consts:
            if fills[j] is not None and _same(v, fills[j]):
                continue
            if runs and runs[-1][1] == k and _same(runs[-1][2], v):
                runs[-1][1] = k + 1
            else:
                runs.append([k, k + 1, v])
        if runs:
            values = ", ".join(py_literal(r[2], np.float64) for r in runs)
            tables += [f"_RUN_START{j} = np.array({[r[0] for r in runs]!r}, dtype=np.uint64)",
                       f"_RUN_STOP{j} = np.array({[r[1] for r in runs]!r}, dtype=np.uint64)",
                       f"_RUN_VAL{j} = np.array([{values}], dtype={np_dtype})"]
            body += [f"    for r in range({len(runs)}):",
                     f"        v = _RUN_VAL{j}[r]",
                     f"        for k in range(_RUN_START{j}[r], _RUN_STOP{j}[r]):",
                     f"            o{j}[b, k] = v"]
        if leaf_dups:
            tables += [f"_DUP_DST{j} = np.array({[k for k, _ in leaf_dups]!r}, dtype=np.uint64)",
                       f"_DUP_SRC{j} = np.array({[k for _, k in leaf_dups]!r}, dtype=np.uint64)"]
            body += [f"    for r in range({len(leaf_dups)}):",
                     f"        o{j}[b, _DUP_DST{j}[r]] = o{j}[b, _DUP_SRC{j}[r]]"]
    return "\n\n" + "\n".join(tables) + f"\n\n\n@njit(**_inline)\ndef finish({leaves}b):\n" + (
        "\n".join(body) or "    pass")


def _same(a, b) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b) or a != a and b != b
