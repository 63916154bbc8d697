"""The NumPy reference interpreter: the executable specification of every op.

It runs a tape over a batch of points, one NumPy call per instruction over a chunk of
points (instruction-major, like the replay executor), so there is no Python loop over
points. A scalar value is a row of the chunk's points (or one number, a constant), a
block of n values an ``(n, chunk)`` array (``(n, 1)``, a constant); an elementwise op
broadcasts them, a block op runs its ``BlockOp.value`` (``linear``: a matrix product over
the chunk). Values are freed after their last use, so memory stays at the tape's live
width times the chunk size. Every other executor is tested against this one.
"""
from __future__ import annotations

import numpy as np

import functools

from .blocks import BLOCK_OPS
from .ops import OPS

CHUNK = 16384


def evaluate(tape, blocks, batch_size: int, dtype, chunk: int = CHUNK, outs=None):
    """Run ``tape`` on ``batch_size`` points.

    Without ``outs`` it returns an array ``(batch_size, n_outputs)``, the transpose of
    an ``(n_outputs, batch_size)`` array: each output is written as one contiguous run
    of points. With ``outs``, a list of 2-D arrays ``(batch_size, w_j)`` whose columns,
    concatenated, are the tape's outputs in order, it writes into them (any strides)
    and returns ``outs``; nothing of the outputs' size is allocated.

    ``blocks`` are 2-D arrays whose columns, concatenated in order, are the tape's
    inputs: shape ``(batch_size, k)`` for per-point data or ``(1, k)`` for data shared by
    all points. Arithmetic is in ``dtype``; NaN and inf propagate without warnings.

    >>> import numpy as np, batchdiff as bd
    >>> tape = bd.grad(lambda v: v[0] ** 3).tape(np.ones((1, 1)))
    >>> evaluate(tape, [np.array([[1.0], [2.0]])], 2, np.float64)
    array([[ 3.],
           [12.]])
    """
    dtype = np.dtype(dtype)
    columns = []                      # tape input -> (block, column)
    for b, block in enumerate(blocks):
        columns.extend((b, c) for c in range(block.shape[1]))
    if len(columns) != tape.n_inputs:
        raise ValueError(f"tape has {tape.n_inputs} inputs, blocks give {len(columns)}")
    single = outs is None
    if single:
        outs = [np.empty((len(tape.outputs), batch_size), dtype=dtype).T]
    if sum(o.shape[1] for o in outs) != len(tape.outputs):
        raise ValueError(f"tape has {len(tape.outputs)} outputs, outs hold "
                         f"{sum(o.shape[1] for o in outs)}")
    program, last_use = _plan(tape, dtype)
    with np.errstate(all="ignore"):
        for start in range(0, batch_size, chunk):
            stop = min(start + chunk, batch_size)
            cols = [np.ascontiguousarray(b[start:stop].T, dtype=dtype) if b.shape[0] != 1
                    else b[0].astype(dtype) for b in blocks]
            vals = _run(tape, program, last_use, cols, columns)
            k = 0
            for o in outs:
                # a chunk of points, output-major, then one transposing copy into o
                rows = np.empty((o.shape[1], stop - start), dtype=dtype)
                for c in range(o.shape[1]):
                    rows[c] = vals[tape.outputs[k + c]]
                o[start:stop] = rows.T
                k += o.shape[1]
    return outs[0] if single else outs


def _plan(tape, dtype):
    """Per instruction: its NumPy function (or constant), and where each value dies."""
    last_use = [[] for _ in tape.instrs]          # values that die at each instruction
    for a, last in enumerate(tape.last_uses()):
        if a < last < len(tape.instrs):
            last_use[last].append(a)
    program = []
    for ins in tape.instrs:
        if ins.is_const:
            program.append(ins.value.array.astype(dtype)[:, None] if ins.size
                           else dtype.type(ins.value))
        elif ins.is_input:
            program.append(None)
        elif ins.op in BLOCK_OPS:
            program.append(functools.partial(_block, BLOCK_OPS[ins.op].value, ins.value, dtype))
        else:
            program.append(OPS[ins.op].value)
    return program, last_use


def _block(rule, parameter, dtype, *args):
    return rule(args, parameter, dtype)


def _run(tape, program, last_use, cols, columns):
    vals: list = [None] * len(tape.instrs)
    for i, ins in enumerate(tape.instrs):
        if ins.is_input:
            b, c = columns[ins.value]
            vals[i] = cols[b][c]
        elif ins.is_const:
            vals[i] = program[i]
        else:
            vals[i] = program[i](*(vals[a] for a in ins.args))
            for a in last_use[i]:
                vals[a] = None
    return vals
