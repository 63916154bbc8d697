"""What every executor needs to know about a tape besides its ops.

Where each input comes from (a column of the per-point matrix ``X`` or an entry of
the shared vector ``S``), and a slot for each value, reused once the value is dead
(liveness), so that a replayed tape's working set stays small.
"""
from __future__ import annotations

import numpy as np


def _is_shared(block, batch_size: int) -> bool:
    return block.shape[0] == 1 and batch_size != 1


def pack_inputs(blocks, batch_size: int, dtype, xp=np):
    """The per-point matrix ``X`` (B, nx) and the shared vector ``S`` of the blocks.

    A block of one row is shared unless the batch itself has one point (then every
    block has one row, and all are treated as per point: same values either way).
    """
    shared = [b for b in blocks if _is_shared(b, batch_size)]
    per_point = [b for b in blocks if not _is_shared(b, batch_size)]
    if len(per_point) == 1:
        X = per_point[0]
        if X.dtype != dtype or not X.flags.c_contiguous:
            X = xp.ascontiguousarray(X, dtype=dtype)
    elif per_point:
        X = xp.ascontiguousarray(xp.concatenate(per_point, axis=1), dtype=dtype)
    else:
        X = xp.empty((batch_size, 0), dtype=dtype)
    S = (xp.concatenate([b.reshape(-1) for b in shared]).astype(dtype) if shared
         else xp.empty(0, dtype=dtype))
    return X, S


def sources_of(blocks, batch_size: int) -> list:
    """Per tape input: ``("x", column)`` of ``X`` or ``("s", index)`` of ``S``, as
    ``pack_inputs`` lays them out."""
    sources, nx, ns = [], 0, 0
    for b in blocks:
        for _ in range(b.shape[1]):
            if _is_shared(b, batch_size):
                sources.append(("s", ns))
                ns += 1
            else:
                sources.append(("x", nx))
                nx += 1
    return sources


def allocate_slots(tape) -> tuple[list, int]:
    """A slot per instruction, reusing the slots of dead values; returns (slots, count).

    A block of n values takes n consecutive slots from its ``slot``; the slots of a dead
    block go to a later block of the same size. An instruction may take the slot of an
    argument that dies at it, when it reads a point's (or a row's) arguments before
    writing its result there: every instruction but ``linear``, whose every result row
    reads every row of its argument.

    >>> import numpy as np, batchdiff as bd
    >>> W = np.ones((8, 8))
    >>> tape = bd.grad(lambda x: np.sum(np.tanh(W @ x))).tape(np.ones((1, 8)))
    >>> slots, count = allocate_slots(tape)
    >>> count < 8 * 6
    True
    """
    last = tape.last_uses()
    dying: dict[int, list] = {}
    for i, l in enumerate(last):
        dying.setdefault(l, []).append(i)
    free: dict[int, list] = {}           # width -> free slots of blocks that wide
    slots = [0] * len(tape.instrs)
    count = 0

    def release(i):
        free.setdefault(max(tape.instrs[i].size, 1), []).append(slots[i])

    for i, ins in enumerate(tape.instrs):
        late = ins.op == "linear"
        if not late:
            for a in dying.get(i, ()):
                if a != i:
                    release(a)
        width = max(ins.size, 1)
        pool = free.get(width)
        if pool:
            slots[i] = pool.pop()
        else:
            slots[i] = count
            count += width
        if late:
            for a in dying.get(i, ()):
                if a != i:
                    release(a)
        if last[i] == i:             # never read (possible only for unused inputs)
            release(i)
    return slots, count
