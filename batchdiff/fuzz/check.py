"""Checking a batch of graphs against the oracle, and the verdicts.

Per graph and point:

- ordinary points: every entry is compared with the oracle, relative to the largest
  value, first or second derivative in the output's ancestry (``ORACLE_RTOL``). An
  entry outside is triaged: *wrong* if the same tape run by the reference interpreter in
  extended precision (np.longdouble) is still off, by no less than a tenth of float64's
  error (rounding shrinks by 2**11 there, a wrong formula does not): the tape computes a
  wrong derivative. *executor* if a Numba executor is off where the reference
  interpreter in the same dtype is not (ten times closer). Otherwise *ill-conditioned*:
  rounding, counted, not a failure;
- points at a kink (abs, sign, max, min, clip, where, comparisons, hypot and arctan2 at
  their kinks, poles), nearer than ``oracle.KINK``: central differences mean nothing
  there; the points where the reference disagrees with them are counted apart, by rule;
- at every point each Numba executor must agree with the reference interpreter in the
  same dtype (``REFERENCE_RTOL``) unless their difference is within ten times what
  moving each op's result by one unit in the last place does to the reference (rounding
  an ill-conditioned entry, or overflowing differently); where the oracle has no value
  (poles, overflow) only NaN and inf must agree, unless the entry is beyond the dtype's
  range (float64's value above float32's largest). A disagreement is an *executor*
  failure, kinks included.

Each failure comes with a self-contained reproducer: the graph's function, the point,
the public call on the failing executor, and the expected value.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..ops import OPS
from .graphs import N_POINTS, RandomGraph, random_graph
from .oracle import KINK, oracle
from .tapes import (ORDER, PARTS, PER_GRAPH, Layout, build_program, expected, results, run,
                    _scale)

EXECUTORS = ("numpy", "replay", "compiled")
DTYPES = ("float64", "float32")
ORACLE_RTOL = {"float64": 1e-11, "float32": 1e-4}
REFERENCE_RTOL = {"float64": 1e-12, "float32": 1e-4}
EXTENDED_RTOL = 1e-13


# -- comparing ---------------------------------------------------------------------------

def _further(got, reference, want, factor=10.0):
    """Entries where ``got`` is more than ``factor`` times further from ``want`` than
    ``reference`` is (rounding in an ill-conditioned entry hits both alike)."""
    with np.errstate(invalid="ignore", over="ignore"):
        mine = np.abs(got.astype(np.float64) - want)
        theirs = np.abs(reference.astype(np.float64) - want)
        return ~(mine <= factor * theirs)


def _special_differ(got, want):
    """Entries where NaN or inf in one is not the same NaN or inf in the other."""
    special = ~np.isfinite(got) | ~np.isfinite(want)
    with np.errstate(invalid="ignore"):
        same = (got == want) | (np.isnan(got) & np.isnan(want))
    return special & ~same


def _outside(got, want, scale, rtol):
    """Entries where |got - want| > rtol * (|want| + scale); NaN matches NaN, inf itself."""
    scale = scale.reshape(scale.shape + (1,) * (got.ndim - scale.ndim))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got.astype(np.float64) - want)
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        return ~same & ~(diff <= rtol * (np.abs(want) + scale))


# -- checking a batch ------------------------------------------------------------------------

@dataclass
class Failure:
    """One wrong entry. ``kind`` "wrong": the tape's derivative disagrees with the oracle
    (in extended precision too); "executor": a Numba executor disagrees with the reference
    interpreter in the same dtype, and with the oracle where there is one. ``want`` is
    the oracle's value, or the reference's where ``oracle`` is False (kinks, poles)."""
    kind: str
    graph: RandomGraph
    point: int
    output: int | None
    entry: tuple
    part: str
    executor: str
    dtype: str
    got: float
    want: float
    at_kink: bool
    oracle: bool = True

    def reproducer(self) -> str:
        return reproducer(self)


@dataclass
class Tally:
    """Counts of a fuzzing run, per executor (see ``summary``)."""
    graphs: Counter = field(default_factory=Counter)        # executor -> graphs
    points: Counter = field(default_factory=Counter)        # (executor, dtype, status) -> n
    entries: Counter = field(default_factory=Counter)       # (executor, dtype, part) -> n
    conditioning: Counter = field(default_factory=Counter)  # (executor, dtype) -> entries
    kinks: Counter = field(default_factory=Counter)         # (dtype, rule) -> points
    failures: list = field(default_factory=list)
    errors: list = field(default_factory=list)              # (seed, executors, message)

    def add(self, other: "Tally"):
        for name in ("graphs", "points", "entries", "conditioning", "kinks"):
            getattr(self, name).update(getattr(other, name))
        self.failures.extend(other.failures)
        self.errors.extend(other.errors)


class _References:
    """The reference interpreter's results on a batch, made when first needed.

    ``get(dtype)``: in float32, float64 or extended precision (np.longdouble).
    ``tape_wrong``: entries where the tape itself is wrong: in extended precision it
    still disagrees with the oracle, by no less than a tenth of float64's error
    (rounding, even in an ill-conditioned entry, shrinks by 2**11 from float64 to
    extended precision; a wrong formula does not). ``rounding``: entries where another
    executor's ``got`` is within what rounding does to the reference (see ``jittered``);
    ``overflows``: entries too large for the dtype, whatever inf or NaN they become.
    """
    JITTERS = 3

    def __init__(self, program, layout):
        self.program, self.layout = program, layout
        self._results = {}

    def get(self, dtype, jitter=None):
        key = (np.dtype(dtype).name, jitter)
        if key not in self._results:
            out = (run(self.program, self.layout, "numpy", dtype) if jitter is None
                   else jittered(self.program, self.layout, dtype, jitter))
            self._results[key] = results(self.program, self.layout, out)
        return self._results[key]

    def tape_wrong(self, name, want, scale):
        ext, ref = self.get(np.longdouble)[name], self.get(np.float64)[name]
        with np.errstate(invalid="ignore", over="ignore"):
            improved = np.abs(ext.astype(np.float64) - want) <= 0.1 * np.abs(ref - want)
        return _outside(ext, want, scale, EXTENDED_RTOL) & ~improved

    def rounding(self, dtype, name, got):
        """Entries of ``got`` within 10 times the jittered references' spread, or with the
        NaN or inf one of them has: what an executor's own rounding may do."""
        base = self.get(dtype)[name].astype(np.float64)
        jits = [self.get(dtype, k)[name] for k in range(self.JITTERS)]
        with np.errstate(invalid="ignore", over="ignore"):
            spread = np.max([np.nan_to_num(np.abs(j - base), nan=0.0, posinf=0.0)
                             for j in jits], axis=0)
            near = np.abs(got - base) <= 10 * spread
        special = np.any([~_special_differ(got, j) & ~np.isfinite(got) for j in jits], axis=0)
        return near | special


    def overflows(self, dtype, name):
        """Entries finite in float64 but beyond the largest number of ``dtype``."""
        exact = self.get(np.float64)[name]
        with np.errstate(invalid="ignore"):
            return np.isfinite(exact) & (np.abs(exact) > np.finfo(dtype).max)


def jittered(program, layout, dtype, seed) -> np.ndarray:
    """The tape by NumPy in ``dtype``, each op's result moved by one unit in the last place
    up or down at random (Monte Carlo arithmetic): how much an entry hangs on rounding."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    columns = np.concatenate([np.broadcast_to(b, (N_POINTS, b.shape[1])) for b in layout.blocks],
                             axis=1).astype(dtype)
    ulp = np.finfo(dtype).eps
    vals = []
    with np.errstate(all="ignore"):
        for ins in program.tape.instrs:
            if ins.is_input:
                v = columns[:, ins.value]
            elif ins.is_const:
                v = np.full(N_POINTS, ins.value, dtype=dtype)
            else:
                v = np.asarray(OPS[ins.op].value(*(vals[a] for a in ins.args)), dtype=dtype)
                v = v * (1 + rng.choice([-ulp, ulp], N_POINTS)).astype(dtype)
            vals.append(v)
    return np.stack([vals[o] for o in program.tape.outputs], axis=1)


def check_batch(graphs, executors=EXECUTORS, dtypes=DTYPES, truths=None) -> Tally:
    """Check ``graphs`` (one merged tape) on ``executors`` in ``dtypes``."""
    tally = Tally()
    tally.graphs.update({e: len(graphs) for e in executors})
    if truths is None:
        truths = [[oracle(g, x) for x in g.points] for g in graphs]
    layout = Layout.of(graphs)
    program = build_program(graphs)
    exp = expected(truths, layout)
    refs = _References(program, layout)
    rules = np.array([[t.kink_rule for t in ts] for ts in truths]).T       # (P, K)
    for dtype in dtypes:
        at_kink = {lv: (exp.kink[lv] < KINK[dtype]) & ~exp.singular[lv] for lv in exp.kink}
        ordinary = {lv: ~exp.singular[lv] & ~at_kink[lv] for lv in exp.kink}
        for status, mask in (("ordinary", ordinary), ("kink", at_kink),
                             ("singular", exp.singular)):
            for e in executors:
                tally.points[e, dtype, status] += int(mask["graph"].sum())
        reference = refs.get(dtype)
        if "numpy" in executors:
            _tally_kinks(tally, dtype, reference, exp, at_kink, layout, rules)
        for executor in executors:
            got = reference if executor == "numpy" else results(
                program, layout, run(program, layout, executor, dtype))
            for name in PARTS:
                level = "graph" if name in PER_GRAPH else "output"
                g, w, s = got[name], exp.want[name], _scale(name, exp.scale[level])
                ref = reference[name]
                ok = ordinary[level].reshape(s.shape + (1,) * (g.ndim - 2))
                kink = at_kink[level].reshape(ok.shape)
                tally.entries[executor, dtype, name] += int(np.broadcast_to(ok, g.shape).sum())
                differ = np.zeros(g.shape, dtype=bool)
                if executor != "numpy" and _outside(g, ref, s, REFERENCE_RTOL[dtype]).any():
                    differ = (_outside(g, ref, s, REFERENCE_RTOL[dtype])
                              & ~refs.rounding(dtype, name, g))
                bad = _outside(g, w, s, ORACLE_RTOL[dtype]) & ok
                if bad.any():
                    wrong = bad & refs.tape_wrong(name, w, s)
                    own = bad & ~wrong & differ & _further(g, ref, w)
                    tally.conditioning[executor, dtype] += int((bad & ~wrong & ~own).sum())
                    _record(tally, "wrong", wrong, g, w, layout, name, executor, dtype, kink)
                    _record(tally, "executor", own, g, w, layout, name, executor, dtype, kink)
                # where the oracle has no value (poles, overflow) only NaN and inf must agree:
                # finite values there come from intermediates beyond RANGE, mere rounding;
                # and an entry beyond the dtype's range may overflow to any of them
                singular = exp.singular[level].reshape(ok.shape)
                special = _special_differ(g, ref) & ~refs.overflows(dtype, name)
                differ = np.where(singular, special & differ, differ)
                _record(tally, "executor", differ & ~ok, g, ref, layout, name, executor, dtype,
                        kink, from_oracle=False)
    return tally


def _tally_kinks(tally, dtype, reference, exp, at_kink, layout, rules):
    """Count the points at a kink where the reference's value or first derivatives differ
    from central differences (the mean of the one-sided derivatives at a corner; second
    differences across a kink are of the order of 1/h and say nothing)."""
    hit = np.zeros_like(at_kink["graph"])
    for name in (p for p in PARTS if ORDER[p] < 2):
        level = "graph" if name in PER_GRAPH else "output"
        owner = np.arange(len(layout.graphs)) if level == "graph" else layout.out_graph
        g, s = reference[name], _scale(name, exp.scale[level])
        off = _outside(g, exp.want[name], s, ORACLE_RTOL[dtype]).reshape(g.shape[:2] + (-1,))
        np.logical_or.at(hit, (slice(None), owner), off.any(-1) & at_kink[level])
    for p, k in zip(*np.nonzero(hit)):
        tally.kinks[dtype, rules[p, k]] += 1


def _record(tally, kind, bad, got, want, layout, part, executor, dtype, at_kink,
            from_oracle=True):
    """One Failure per graph, part, executor and dtype: its first bad entry.

    ``at_kink`` is broadcastable to ``bad``.

    ``from_oracle``: ``want`` is the oracle's (else the reference interpreter's)."""
    seen = set()
    per_graph = part in PER_GRAPH
    for idx in zip(*np.nonzero(bad)):
        p, j = int(idx[0]), int(idx[1])
        k = j if per_graph else int(layout.out_graph[j])
        if k in seen:
            continue
        seen.add(k)
        tally.failures.append(Failure(
            kind, layout.graphs[k], p, None if per_graph else int(layout.out_local[j]),
            tuple(int(i) for i in idx[2:]), part, executor, dtype, float(got[idx]),
            float(want[idx]), bool(np.broadcast_to(at_kink, bad.shape)[idx]), from_oracle))


# -- reproducers -----------------------------------------------------------------------------

_CALLS = {
    "value": "bd.jvp(f{opts})(X, np.zeros_like(X))[0][0, {j}]",
    "jacobian_forward": "bd.jacobian(f, mode='forward'{opts})(X)[0, {j}, {e}]",
    "jacobian_reverse": "bd.jacobian(f, mode='reverse'{opts})(X)[0, {j}, {e}]",
    "hessian_forward": "bd.hessian(f, mode='forward'{opts})(X)[0, {j}, {e}]",
    "hessian_reverse": "bd.hessian(f, mode='reverse'{opts})(X)[0, {j}, {e}]",
    "jvp": "bd.jvp(f{opts})(X, V)[1][0, {j}]",
    "vjp": "bd.vjp(f{opts})(X, U)[1][0, {e}]",
    "hvp": "bd.hvp(lambda x: np.dot(U[0], f(x)){opts})(X, V)[0, {e}]",
}
_OPTIONS = {"numpy": ", backend='numpy'", "replay": ", backend='numba', method='replay'",
            "compiled": ", backend='numba', method='compiled'"}


def reproducer(failure: Failure) -> str:
    """A self-contained Python snippet that recomputes the failing entry."""
    g = failure.graph
    x = g.points[failure.point]
    call = _CALLS[failure.part].format(opts=_OPTIONS[failure.executor], j=failure.output,
                                       e=", ".join(map(str, failure.entry)))
    what = ("mpmath, 60 digits, central differences" if failure.oracle
            else "the reference interpreter, backend='numpy'")
    lines = [f"# batchdiff.fuzz graph seed {g.seed}, point {failure.point}"
             f"{' (at a kink)' if failure.at_kink else ''}: {failure.part} on "
             f"{failure.executor}, {failure.dtype}",
             "import numpy as np", "import scipy.special", "import batchdiff as bd",
             "from batchdiff.fuzz.graphs import BLOCK_U, BLOCK_V, BLOCK_W", "", g.source(),
             f"X = np.array([{list(x)}], dtype=np.{failure.dtype})"]
    if failure.part in ("jvp", "hvp"):
        lines.append(f"V = np.array([{list(g.tangents[failure.point])}], "
                     f"dtype=np.{failure.dtype})")
    if failure.part in ("vjp", "hvp"):
        lines.append(f"U = np.array([{list(g.cotangents[failure.point])}], "
                     f"dtype=np.{failure.dtype})")
    lines += [f"got = {call}",
              f"print(got, 'expected', {_literal(failure.want)})   # {what}; the fuzzer got "
              f"{failure.got!r}"]
    return "\n".join(lines) + "\n"


def _literal(x: float) -> str:
    return repr(x) if np.isfinite(x) else f"float('{x}')"


def rerun(failure: Failure) -> float:
    """The reproducer's ``got``: whether the failure shows outside its batch."""
    space = {}
    code = reproducer(failure).replace("print(got", "(got")
    with np.errstate(all="ignore"):
        exec(compile(code, f"<fuzz graph {failure.graph.seed}>", "exec"), space)
    return float(space["got"])


# -- runs ------------------------------------------------------------------------------------

def check_graphs(graphs, executors, dtypes, truths) -> Tally:
    """``check_batch``, and if it raises, each graph alone: an exception is a finding too."""
    try:
        return check_batch(graphs, executors, dtypes, truths)
    except Exception as e:          # noqa: BLE001  (any exception on a valid function)
        if len(graphs) == 1:
            tally = Tally()
            tally.errors.append((graphs[0].seed, executors, f"{type(e).__name__}: {e}"))
            return tally
    tally = Tally()
    for g, t in zip(graphs, truths):
        tally.add(check_graphs([g], executors, dtypes, [t]))
    return tally


def check_range(start, count, seed=0, executors=EXECUTORS, dtypes=DTYPES, batch=100,
                compiled_batch=25, compiled_every=1, progress=None, total=None) -> Tally:
    """Graphs ``start .. start+count-1`` (seeds ``seed + i``), ``batch`` to a tape.

    The compiled executor gets the first ``compiled_batch`` graphs of every
    ``compiled_every``-th batch (its compile time grows with the tape, so its tapes hold
    fewer graphs). ``progress(tally, done)`` is called after each batch; counts go to
    ``total`` (a new Tally if None), which is returned.

    >>> from batchdiff import fuzz
    >>> tally = fuzz.check_range(0, 10, executors=("numpy",), dtypes=("float64",))
    >>> tally.graphs["numpy"], tally.failures, tally.errors
    (10, [], [])
    """
    total = Tally() if total is None else total
    fast = tuple(e for e in executors if e != "compiled")
    for b, first in enumerate(range(start, start + count, batch)):
        ids = range(first, min(first + batch, start + count))
        graphs = [random_graph(seed + i) for i in ids]
        truths = [[oracle(g, x) for x in g.points] for g in graphs]
        if fast:
            total.add(check_graphs(graphs, fast, dtypes, truths))
        if "compiled" in executors and b % compiled_every == 0:
            k = compiled_batch
            total.add(check_graphs(graphs[:k], ("compiled",), dtypes, truths[:k]))
        if progress is not None:
            progress(total, ids.stop - start)
    return total


def summary(tally: Tally, executors=EXECUTORS, dtypes=DTYPES) -> str:
    """The counts as a table, one row per executor and dtype."""
    lines = ["executor  dtype    graphs  points: ordinary  kink  singular  entries vs oracle"
             "  wrong  executor  ill-conditioned"]
    for e in executors:
        for d in dtypes:
            n = sum(v for (e_, d_, _), v in tally.entries.items() if (e_, d_) == (e, d))
            kinds = Counter(f.kind for f in tally.failures if (f.executor, f.dtype) == (e, d))
            pts = [tally.points[e, d, s] for s in ("ordinary", "kink", "singular")]
            lines.append(f"{e:<9} {d:<8} {tally.graphs[e]:>6}  {pts[0]:>16}  {pts[1]:>4}  "
                         f"{pts[2]:>8}  {n:>17,}  {kinds['wrong']:>5}  {kinds['executor']:>8}  "
                         f"{tally.conditioning[e, d]:>15}")
    if tally.kinks:
        lines.append("points at a kink where the reference differs from central differences "
                     "(conventions, not failures): " + ", ".join(
                         f"{r} {n} ({d})" for (d, r), n in sorted(tally.kinks.items())))
    for seed, executors_, message in tally.errors:
        lines.append(f"ERROR graph seed {seed} on {','.join(executors_)}: {message}")
    return "\n".join(lines)
