"""The transforms as tapes: each builds its derivative tape and the layout of its results.

``build_program`` traces the per-point function at the arguments' shapes, builds the
derivative tape of one transform with ``ad`` (its builder in ``TRANSFORMS``) and lays
the tape's outputs out as the transform's results: a ``Program``, with a ``Leaf`` per
result array, dense or sparse. Running a program is ``batched.py``'s.

>>> import numpy as np
>>> prog = build_program("grad", lambda v: np.sum(v ** 2), [(3,)], (0,), "auto", np.float64)
>>> prog.out_shape, prog.widths
((), (3,))
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import ad, steps
from .errors import ShapeError
from .graph import Tape
from .simplify import strip_stops
from .sparse import Pattern
from .tracer import trace


@dataclass(frozen=True, eq=False)
class Leaf:
    """One result array: tape outputs ``offset .. offset + width`` of every point.

    ``shape`` is the per-point shape of the (dense) result. A sparse leaf has a
    ``pattern`` (``sparse.Pattern``) and holds only its ``width`` structural non-zeros.
    """
    offset: int
    width: int
    shape: tuple
    pattern: object = None


@dataclass(frozen=True)
class _SparseSpec:
    """A result to store sparse: its output positions, seen as a ``matrix`` (rows, columns)."""
    index: np.ndarray
    matrix: tuple
    upper: bool


@dataclass(frozen=True)
class Program:
    """A derivative tape laid out as the transform's results.

    The tape has one output per stored element of the results, in order (an element
    that appears twice, like H[a, b] and H[b, a], is the same node twice), so an
    executor writes the final arrays directly. ``results`` mirrors the result's
    structure (nested tuples) with a ``Leaf`` per array. ``tape`` keeps ``stop``
    instructions (it may be differentiated again when inlined); ``executable`` has
    them removed.
    """
    tape: object
    results: object
    out_shape: tuple
    captured: tuple

    @functools.cached_property
    def executable(self):
        return strip_stops(self.tape)

    @functools.cached_property
    def leaves(self) -> tuple:
        """Every Leaf, in the order of the tape's outputs."""
        found = []
        _build(self.results, found.append)
        return tuple(found)

    @property
    def widths(self) -> tuple:
        return tuple(leaf.width for leaf in self.leaves)


def _lay_out(tape, spec):
    """Replace each index array of ``spec`` by a Leaf; the tape's outputs follow suit."""
    order = []
    results = _lay_out_leaf(tape, spec, order)
    return Tape(tape.instrs, tuple(tape.outputs[k] for k in order), tape.n_inputs), results


def _lay_out_leaf(tape, s, order):
    """The Leaf (or nested tuple of them) for ``s``, appending its outputs to ``order``.

    A ``_SparseSpec`` keeps the positions whose output is not a structural zero (a
    constant 0 of the tape, the same at every point), and with ``upper`` only those
    on or above the diagonal of each square block of its matrix view.
    """
    if isinstance(s, tuple):
        return tuple(_lay_out_leaf(tape, x, order) for x in s)
    start = len(order)
    if not isinstance(s, _SparseSpec):
        order.extend(int(k) for k in s.ravel())
        return Leaf(start, len(order) - start, tuple(s.shape))
    flat = s.index.ravel()
    rows, cols = np.divmod(np.arange(flat.size), max(s.matrix[1], 1))
    keep = np.array([not _is_zero(tape, tape.outputs[k]) for k in flat], dtype=bool)
    if s.upper:                 # square blocks: row r of the matrix is row r % n of its block
        keep &= cols >= rows % max(s.matrix[1], 1)
    positions = np.flatnonzero(keep)
    order.extend(int(k) for k in flat[positions])
    pattern = Pattern.from_positions(positions, s.matrix, upper=s.upper)
    return Leaf(start, len(positions), tuple(s.index.shape), pattern)


def _is_zero(tape, node) -> bool:
    return tape.const_value(node) == 0



class _Traced:
    """A traced function and what the transforms' builders need of it: the tape, the
    inputs differentiated (``wrt``) and the leaves of results shaped like arguments."""

    def __init__(self, tape, out_shape, shapes, argnums, mode, sparse):
        self.tape, self.out_shape, self.shapes, self.argnums = tape, out_shape, shapes, argnums
        self.mode, self.sparse = mode, sparse
        self.sizes = [math.prod(s) for s in shapes]
        offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.wrt = [k for i in argnums for k in range(offsets[i], offsets[i] + self.sizes[i])]
        self.wrt_off = np.concatenate(
            [[0], np.cumsum([self.sizes[i] for i in argnums])]).astype(int)
        self.m = len(tape.outputs)

    def value(self):
        """The leaf of f's own value: the first ``m`` outputs, shaped like f's output."""
        return np.arange(self.m).reshape(self.out_shape)

    def per_arg(self, first):
        """A leaf per argnum, shaped like it: positions first + wrt offset + element index."""
        return tuple(first + self.wrt_off[a] + np.arange(self.sizes[i]).reshape(self.shapes[i])
                     for a, i in enumerate(self.argnums))

    def stored(self, index, rows, columns):
        """``index`` as a dense leaf, or sparse as a ``rows`` x ``columns`` matrix."""
        return index if self.sparse is None else _SparseSpec(index, (rows, columns),
                                                             self.sparse == "upper")


# -- the transforms: each builds its derivative tape and the layout of its results ----

def _grad(t, with_value=False):
    """One reverse sweep unless ``mode="forward"`` asks for a tangent per input."""
    mode = "reverse" if t.mode == "auto" else t.mode
    dtape = ad.jacobian_tape(t.tape, t.wrt, mode, with_value=with_value)
    grads = t.per_arg(int(with_value))
    return dtape, ((t.value(), grads) if with_value else grads)


def _value_and_grad(t):
    return _grad(t, with_value=True)


def _jacobian(t, with_value=False):
    dtape = ad.jacobian_tape(t.tape, t.wrt, t.mode, with_value=with_value)
    jac = _jacobian_leaves(t, t.m if with_value else 0)
    return dtape, ((t.value(), jac) if with_value else jac)


def _jacobian_leaves(t, first):
    """The Jacobian's leaf per argnum, its outputs from position ``first`` on."""
    n, m = len(t.wrt), t.m
    return tuple(
        t.stored((first + np.arange(m)[:, None] * n + t.wrt_off[a]
                  + np.arange(t.sizes[i])[None, :]).reshape(t.out_shape + t.shapes[i]),
                 m, t.sizes[i])
        for a, i in enumerate(t.argnums))


def _value_and_jacobian(t):
    return _jacobian(t, with_value=True)


def _hessian(t, with_value=False, with_gradient=False):
    dtape, index = ad.hessian_tape(t.tape, t.wrt, t.mode, with_value, with_gradient)
    n, m, off = len(t.wrt), t.m, t.wrt_off
    full = np.empty((m, n, n), dtype=int)
    for (j, a, b), pos in index.items():
        full[j, a, b] = full[j, b, a] = pos
    hess = tuple(
        tuple(t.stored(full[:, off[a]:off[a + 1], off[c]:off[c + 1]]
                       .reshape(t.out_shape + t.shapes[i] + t.shapes[k]),
                       m * t.sizes[i], t.sizes[k])
              for c, k in enumerate(t.argnums))
        for a, i in enumerate(t.argnums))
    lead = (t.value(),) if with_value else ()
    if with_gradient:                   # a scalar f: its Jacobian is the gradient
        lead += (t.per_arg(m if with_value else 0),)
    return dtape, (lead + (hess,) if lead else hess)


def _value_and_hessian(t):
    return _hessian(t, with_value=True)


def _value_grad_and_hessian(t):
    return _hessian(t, with_value=True, with_gradient=True)


def _jvp(t):
    return ad.jvp_tape(t.tape, t.wrt), (t.value(), t.m + t.value())


def _vjp(t):
    return ad.vjp_tape(t.tape, t.wrt), (t.value(), t.per_arg(t.m))


def _hvp(t):
    return ad.hvp_tape(t.tape, t.wrt), t.per_arg(0)


def _step(step_tape, damped):
    """The builder of a solver step (``steps.newton_tape``, ``steps.gauss_newton_tape``):
    its outputs are shaped like the differentiated arguments."""
    def build(t):
        return step_tape(t.tape, t.wrt, t.mode, damped), t.per_arg(0)
    return build


def _gauss_newton(t):
    dtape = steps.gauss_newton_tape(t.tape, t.wrt, t.mode, step=False)
    n, m, off = len(t.wrt), t.m, t.wrt_off
    full = m + np.arange(n * n).reshape(n, n)
    JtJ = tuple(tuple(full[off[a]:off[a + 1], off[c]:off[c + 1]]
                      .reshape(t.shapes[i] + t.shapes[k])
                      for c, k in enumerate(t.argnums))
                for a, i in enumerate(t.argnums))
    return dtape, (t.value(), JtJ, t.per_arg(m + n * n))


def _first(res):
    return res[0]


def _value_first(res):
    return res[0], res[1][0]


@dataclass(frozen=True)
class _Kind:
    """One transform: its builder, what it takes besides f's arguments, its results.

    ``build(traced)`` -> (derivative tape, nested tuples of output positions);
    ``scalar``: f must return a scalar; ``extra``: "tangent" (one per argnum),
    "cotangent" (one) or "damping" (one scalar λ) follow f's arguments in a call;
    ``collapse(results)`` is what a call with an int ``argnums`` returns of the
    per-argnum tuples; ``fixed_mode``: how it differentiates whatever ``mode`` says
    (a transform with one must be given no other ``mode`` than "auto").
    """
    build: Callable
    scalar: bool = False
    extra: str = ""
    collapse: Callable = _first
    fixed_mode: str = ""


TRANSFORMS = {
    "grad": _Kind(_grad, scalar=True),
    "value_and_grad": _Kind(_value_and_grad, scalar=True, collapse=_value_first),
    "jacobian": _Kind(_jacobian),
    "value_and_jacobian": _Kind(_value_and_jacobian, collapse=_value_first),
    "hessian": _Kind(_hessian, collapse=lambda res: res[0][0]),
    "value_and_hessian": _Kind(_value_and_hessian, collapse=lambda res: (res[0], res[1][0][0])),
    "value_grad_and_hessian": _Kind(_value_grad_and_hessian, scalar=True,
                                    collapse=lambda res: (res[0], res[1][0], res[2][0][0])),
    "jvp": _Kind(_jvp, extra="tangent", collapse=lambda res: res, fixed_mode="forward"),
    "vjp": _Kind(_vjp, extra="cotangent", collapse=_value_first, fixed_mode="reverse"),
    "hvp": _Kind(_hvp, scalar=True, extra="tangent", fixed_mode="forward over reverse"),
    "newton_step": _Kind(_step(steps.newton_tape, False)),
    "damped_newton_step": _Kind(_step(steps.newton_tape, True), extra="damping"),
    "gauss_newton_step": _Kind(_step(steps.gauss_newton_tape, False)),
    "damped_gauss_newton_step": _Kind(_step(steps.gauss_newton_tape, True), extra="damping"),
    "gauss_newton": _Kind(_gauss_newton, collapse=lambda res: (res[0], res[1][0][0], res[2][0])),
}
KINDS = tuple(TRANSFORMS)


def build_program(kind, f, shapes, argnums, mode, dtype, sparse=None) -> Program:
    """Trace ``f`` at argument ``shapes`` and build the tape of transform ``kind``.

    ``sparse`` ("full" or "upper", jacobian and hessian only) stores each result as
    its structural non-zeros (see ``_lay_out``); None stores it dense.
    """
    transform = TRANSFORMS.get(kind)
    if transform is None:
        raise ValueError(f"unknown transform {kind!r}")
    tape, out_shape, captured = trace(f, shapes, dtype)
    if transform.scalar and out_shape != ():
        raise ShapeError(
            f"{kind} needs a function with a scalar output, but it returned shape {out_shape}: "
            "use vjp with a cotangent, or jacobian" + (
                " (hvp of a vector function: vjp of a jvp, or hessian)" if kind == "hvp" else ""))
    dtape, outputs = transform.build(_Traced(tape, out_shape, shapes, argnums, mode, sparse))
    dtape, results = _lay_out(dtape, outputs)
    return Program(dtape, results, out_shape, tuple(captured))


def _build(spec, pick):
    """``spec``'s nested tuples with ``pick(leaf)`` for each Leaf.

    A module-level function, not a closure calling itself: such a closure is a
    reference cycle, and everything it reaches (the results) would wait for the
    cyclic garbage collector.
    """
    if isinstance(spec, Leaf):
        return pick(spec)
    return tuple(_build(x, pick) for x in spec)


def _unpack(kind, spec, single, pick):
    """Results shaped like ``spec``; per-argnum tuples collapse when argnums was an int."""
    res = _build(spec, pick)
    return TRANSFORMS[kind].collapse(res) if single else res
