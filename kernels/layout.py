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

    An instruction may take the slot of an argument that dies at it: executors read
    all arguments of a point before writing its result.
    """
    last = tape.last_uses()
    dying: dict[int, list] = {}
    for i, l in enumerate(last):
        dying.setdefault(l, []).append(i)
    free: list[int] = []
    slots = [0] * len(tape.instrs)
    count = 0
    for i in range(len(tape.instrs)):
        for a in dying.get(i, ()):
            if a != i:
                free.append(slots[a])
        if free:
            slots[i] = free.pop()
        else:
            slots[i] = count
            count += 1
        if last[i] == i:             # never read (possible only for unused inputs)
            free.append(slots[i])
    return slots, count
