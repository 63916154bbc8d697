"""One plan of a tape for straight-line code, and the printer of its statements.

A ``Plan`` is what every compiled target needs to know of a tape, whatever language
it prints: the computed instructions cut into segments (compilers' time grows faster
than a function's size), which values cross a segment boundary and the scratch slot
each goes through (slots are reused once the values in them are dead), and where the
outputs go: the leaves' positions of every node, the constant outputs, and the
positions that repeat a node already stored in the same leaf (the mirrored triangle
of a Hessian).

A target is a ``Printer`` subclass that says how to spell a definition, a load, a
scratch access and a store (its language table); ``Printer.segment`` prints one
segment's statements from the plan the same way for all of them, so the Numba
kernels (a point at a time or a tile of points across SIMD lanes) and the CUDA kernel
differ only in those spellings and in the loops around the segments.

>>> import numpy as np, batchdiff as bd
>>> tape = bd.hessian(lambda v: v[0] ** 2 * v[1]).tape(np.ones((1, 2)))
>>> plan = Plan(tape, widths=(4,))
>>> plan.positions[tape.outputs[1]]       # H[0, 1] and H[1, 0]: one node, two positions
[(0, 1), (0, 2)]
>>> plan.dups                             # per leaf: (column, column it copies)
[[(2, 1)]]
"""
from __future__ import annotations

import numpy as np

from batchdiff.blocks import BLOCK_OPS
from batchdiff.ops import OPS

from .printing import expression

# Ops that compare their arguments (``ops.Op.compares``). A constant argument of one is
# not printed as a literal but hidden from the compiler (read at run time from the shared
# inputs on the CPU, through a volatile local in CUDA): LLVM 22.1 (llvmlite 0.50) and NVVM (nvcc
# 13.0), threading a comparison over a select, fold
# ``select(fcmp(select(fcmp(c, x), c, x), c), ...)`` wrongly when both comparisons have
# the same constant c: with ``v = np.maximum(1.0, x)``, ``np.where(v >= 1.0, v, 1.0)``
# gave NaN at x = NaN, not 1.0, and ``np.maximum(0.0, x) > 0.0`` picked -0.0 at x = -0.0
# (LLVM's instcombine alone does it to a four-instruction function). A comparison with a
# value the compiler cannot see folds nothing.
COMPARING_OPS = frozenset(name for name, op in OPS.items() if op.compares)


def compared_constants(tape) -> list:
    """The constant nodes that an op of ``tape`` compares (``COMPARING_OPS``), in order.

    >>> import numpy as np, batchdiff as bd
    >>> tape = bd.grad(lambda v: np.maximum(v[0], 0.5) * 3.0).tape(np.ones((1, 1)))
    >>> [tape.instrs[a].value for a in compared_constants(tape)]
    [0.5]
    """
    found = {}
    for i in tape.ops():
        ins = tape.instrs[i]
        if ins.op in COMPARING_OPS:
            found.update((a, None) for a in ins.args
                         if tape.instrs[a].is_const and not tape.instrs[a].size)
    return list(found)


def leaf_columns(widths):
    """Per tape output, in order: ``(leaf, column)`` for leaves of these widths."""
    return [(j, c) for j, w in enumerate(widths) for c in range(w)]


def leaf_widths(n_outputs, widths) -> tuple:
    """``widths`` as a tuple (``None``: one leaf of all outputs), checked to cover them."""
    widths = (n_outputs,) if widths is None else tuple(widths)
    if any(w < 0 for w in widths) or sum(widths) != n_outputs:
        raise ValueError(f"widths={widths}: the leaves' widths must be non-negative and "
                         f"sum to the tape's {n_outputs} outputs")
    return widths


class Plan:
    """A tape planned for straight-line code in segments of at most ``segment`` statements.

    - ``segments``: the computed instructions, in order, cut into runs (``[[]]`` if none);
      ``seg_of[i]`` is the segment of instruction ``i``; a block instruction that
      loops over a block (``loops``: an op on blocks, ``sum``, ``broadcast``,
      ``linear``) is in a block segment (``is_block_segment``): ``sum``, ``broadcast``
      and ``linear`` alone, consecutive elementwise ops on blocks of one size together,
      one loop over the block whose values stay in locals (``fused``); ``index`` and
      ``pack`` read and write a block's scratch slots among scalar statements;
    - ``slot[i]``, ``n_slots``: the scratch slot of each value a later segment reads (a
      block of n values: n consecutive slots from ``slot[i]``);
    - ``positions[node]``: every ``(leaf, column)`` the node is written to, in output order;
    - ``stores[node]``: the positions written from the node itself: for a computed node
      the first in each leaf; ``dups[leaf]``: ``(column, column it copies)`` for the
      others; an input is stored at all its positions, a constant at none;
    - ``consts[leaf]``: ``(column, value)`` of the leaf's constant outputs.
    """

    def __init__(self, tape, widths=None, segment=250):
        self.tape = tape
        self.widths = widths = leaf_widths(len(tape.outputs), widths)
        self.segment_size = segment
        self.segments = _segments(tape, segment)
        self.seg_of = {i: s for s, seg in enumerate(self.segments) for i in seg}
        self.positions: dict[int, list] = {}
        for o, position in zip(tape.outputs, leaf_columns(widths)):
            self.positions.setdefault(o, []).append(position)
        self.stores: dict[int, list] = {}
        self.consts = [[] for _ in widths]
        self.dups = [[] for _ in widths]
        for o, where in self.positions.items():
            ins = tape.instrs[o]
            if ins.is_const:
                for j, c in where:
                    self.consts[j].append((c, ins.value))
                continue
            first = {}
            for j, c in where:
                if ins.is_op and j in first:
                    self.dups[j].append((c, first[j]))
                else:
                    first.setdefault(j, c)
                    self.stores.setdefault(o, []).append((j, c))
        for table in self.consts + self.dups:
            table.sort()
        self.slot, self.n_slots = self._scratch_slots()

    def _scratch_slots(self):
        """A slot of the scratch array for each value read by a later segment.

        A segment reads its incoming values before it writes any, so a value produced in
        segment s may take the slot of a value last read in segment s; a block segment
        writes its rows while it reads, so its result takes no slot freed at it. A block
        of n values takes n consecutive slots, freed for a later block of n.
        """
        instrs = self.tape.instrs
        last_seg = {}
        for i, s in self.seg_of.items():
            for a in instrs[i].args:
                if a in self.seg_of:
                    last_seg[a] = max(last_seg.get(a, -1), s)
        freed: dict[int, list] = {}
        for a, s in last_seg.items():
            if s > self.seg_of[a]:
                freed.setdefault(s, []).append(a)
        slot, free, count = {}, {}, 0
        for s, seg in enumerate(self.segments):
            # a block is read element by element where a segment needs it (``index``):
            # its slots are free only after the segment, as a block segment's arguments
            early = [] if self.is_block_segment(s) else [
                a for a in freed.get(s, ()) if not instrs[a].size]
            late = [a for a in freed.get(s, ()) if a not in early]
            for a in sorted(early, key=lambda a: slot[a]):
                free.setdefault(1, []).append(slot[a])
            for i in seg:
                if last_seg.get(i, -1) > s:
                    width = max(instrs[i].size, 1)
                    if free.get(width):
                        slot[i] = free[width].pop()
                    else:
                        slot[i], count = count, count + width
            for a in sorted(late, key=lambda a: slot[a]):
                free.setdefault(max(instrs[a].size, 1), []).append(slot[a])
        return slot, count

    def is_block_segment(self, s) -> bool:
        """Whether segment ``s`` loops over a block (``loops``)."""
        seg = self.segments[s]
        return bool(seg) and loops(self.tape.instrs[seg[0]])

    @property
    def last(self) -> int:
        """The index of the last segment, which also writes the outputs that are inputs."""
        return len(self.segments) - 1

    def output_inputs(self) -> list:
        """The inputs that are outputs, in output order."""
        return [o for o in self.positions if self.tape.instrs[o].is_input]

    def args_of(self, s) -> set:
        """The nodes that the instructions of segment ``s`` read."""
        return {a for i in self.segments[s] for a in self.tape.instrs[i].args}

    def reads(self, s):
        """Segment ``s``'s inputs (nodes, ascending) and values from earlier segments."""
        instrs = self.tape.instrs
        read = self.args_of(s)
        if s == self.last:
            read.update(self.output_inputs())
        inputs = sorted(a for a in read if instrs[a].is_input)
        incoming = sorted(a for a in read if a in self.slot and self.seg_of[a] < s
                          and not instrs[a].size)     # a block is read element by element
        return inputs, incoming


def loops(ins) -> bool:
    """Whether block instruction ``ins`` is printed as loops over a block (a segment of
    its own): an elementwise op on blocks, ``sum``, ``broadcast`` or ``linear``; not
    ``index`` and ``pack``, which read or write its slots one by one."""
    return ins.is_op and ins.is_block and ins.op not in ("index", "pack")


def fused(ins) -> bool:
    """Whether ``ins`` is an elementwise op on blocks: consecutive ones of one size share
    a block segment, one loop over the block."""
    return loops(ins) and ins.op not in BLOCK_OPS


def _segments(tape, segment) -> list:
    """The computed instructions in runs of at most ``segment``: scalar statements, or a
    block instruction that loops over a block (``loops``), with the elementwise ops on
    blocks of its size that follow it (``fused``)."""
    runs, run, kind = [], [], None       # kind: None (scalars), or the fused block size
    instrs = tape.instrs
    for i in tape.ops():
        ins = instrs[i]
        joins = (ins.size if fused(ins) else "alone") if loops(ins) else None
        if run and (joins != kind or joins == "alone" or len(run) == segment):
            runs.append(run)
            run = []
        run.append(i)
        kind = joins
    if run:
        runs.append(run)
    return runs or [[]]


class Printer:
    """A plan's statements in one target language: subclasses fill in the spellings.

    ``target`` picks the op spellings of ``ops.OPS`` (``"py"`` or ``"c"``); ``literal``
    spells a constant; ``define(name, expr)``, ``load(kind, index)`` (an input from the
    batch ``"x"`` or the shared ``"s"``), ``scratch(slot)`` and ``out(leaf, column)``
    spell the statements; ``store_positions(node)`` says where a node is written from
    its local (``plan.stores`` by default, where the remaining positions are copied
    later; all of ``plan.positions`` for a target that writes each one).
    """
    target = "py"

    def __init__(self, plan: Plan, dtype, sources):
        self.plan, self.tape, self.dtype, self.sources = plan, plan.tape, np.dtype(dtype), sources
        # the constants an op compares (``compared_constants``), each named ``k{node}``
        # and hidden from the target's compiler: node -> its position among them
        self.compared = {a: k for k, a in enumerate(compared_constants(self.tape))}
        self.spelled: dict = {}   # node -> how a block segment spells it (``name``)

    # -- the language table ------------------------------------------------------------
    def literal(self, value) -> str:
        raise NotImplementedError

    def define(self, name, expr) -> str:
        return f"{name} = {expr}"

    def assign(self, lhs, rhs) -> str:
        return f"{lhs} = {rhs}"

    def load(self, kind, index) -> str:
        raise NotImplementedError

    def scratch(self, slot) -> str:
        return f"t[{slot}]"

    def block_element(self, node, i) -> str:
        """Element ``i`` of block ``node`` in its scratch slots (``i`` a number or a
        loop variable's name)."""
        return self.scratch(f"{self.plan.slot[node]} + {i}")

    def out(self, leaf, column) -> str:
        raise NotImplementedError

    def store_positions(self, node) -> list:
        return self.plan.stores.get(node, ())

    # -- shared ------------------------------------------------------------------------
    def name(self, i) -> str:
        """Node ``i`` in a statement: its local, or a literal for a constant (``k{i}`` for
        a compared one)."""
        ins = self.tape.instrs[i]
        if i in self.spelled:
            return self.spelled[i]
        if i in self.compared:
            return f"k{i}"
        if ins.is_const:
            return self.literal(ins.value)
        return f"x{ins.value}" if ins.is_input else f"v{i}"

    def compared_read(self, s) -> list:
        """The compared constants that segment ``s`` reads, ascending."""
        return sorted(self.plan.args_of(s) & self.compared.keys())

    def load_input(self, i) -> str:
        return self.load(*self.sources[self.tape.instrs[i].value])

    def expression(self, ins) -> str:
        """The value of instruction ``ins`` in the target's op spellings."""
        return expression(ins, [self.name(a) for a in ins.args], self.target, self.dtype,
                          self.tape.const_value)

    def checks(self, ins) -> list:
        """Statements before instruction ``ins`` (none by default)."""
        return []

    def stores(self, node) -> list:
        """Statements writing ``node`` from its local."""
        return [self.assign(self.out(j, c), self.name(node)) for j, c in self.store_positions(node)]

    def tail(self) -> list:
        """Statements ending the last segment: the outputs that are inputs."""
        return [line for o in self.plan.output_inputs() for line in self.stores(o)]

    def segment(self, s) -> list:
        """Segment ``s``: its loads, its statements with their stores, its scratch writes."""
        plan, instrs = self.plan, self.tape.instrs
        inputs, incoming = plan.reads(s)
        lines = [self.define(self.name(a), self.load_input(a)) for a in inputs]
        lines += [self.define(f"v{a}", self.scratch(plan.slot[a])) for a in incoming]
        for i in plan.segments[s]:
            ins = instrs[i]
            if ins.op == "pack":        # into the block's scratch slots
                lines += [self.assign(self.block_element(i, r), self.name(a))
                          for r, a in enumerate(ins.args)]
                continue
            if ins.op == "index":
                lines.append(self.define(f"v{i}", self.block_element(ins.args[0], ins.value)))
            else:
                lines += self.checks(ins)
                lines.append(self.define(f"v{i}", self.expression(ins)))
            lines += self.stores(i)
            if i in plan.slot:
                lines.append(self.assign(self.scratch(plan.slot[i]), f"v{i}"))
        if s == plan.last:
            lines += self.tail()
        return lines
