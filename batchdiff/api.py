"""The public transforms: grad, value_and_grad, jacobian, hessian, jvp, vjp, hvp.

Each returns a ``Transformed`` function. Called on arrays, it traces the per-point
function once per argument shape (cached), builds the derivative tape with ``ad``,
and runs it over the batch with the chosen executor. Called on traced values (inside
another transform), it inlines its derivative tape into the enclosing trace instead,
so transforms compose: ``bd.jacobian(bd.hessian(f))`` gives third derivatives.

Every transform takes the same options:

argnums: int or tuple of ints, which positional arguments to differentiate; a
    tuple gives a tuple of results. The others are constants of the derivative.
in_axes: 0 (default), None, or one entry per argument: the batch axis of each
    argument, or None for an argument shared by all points (as ``jax.vmap``).
backend: None (chosen from the inputs), "numpy" (the reference interpreter),
    "numba" or "cupy".
method: "auto", "replay" or "compiled": the executor of the numba/cupy back ends.
mode: "auto", "forward" or "reverse": the AD mode (jacobian, hessian); "auto"
    builds both and keeps the smaller tape.
sparse: (jacobian, hessian) return a ``SparseResult``, the structural non-zeros only.

A call takes ``out=``: an array (or a tuple of arrays, nested as the result is) to
write the results into instead of new ones; it is returned. Each must have the
result's shape and dtype, on the inputs' device, writable, and C-contiguous on the
CPU. A sparse result takes its values array ``(B, nnz)`` or the SparseResult itself.

>>> import numpy as np, batchdiff as bd
>>> g = bd.grad(lambda v: np.sum(v ** 2))
>>> buf = np.empty((2, 3))
>>> g(np.ones((2, 3)), out=buf) is buf
True
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import ad, batching, kernels, outputs
from .errors import ShapeError
from .graph import Tape, Var, active_graphs, replay
from .simplify import strip_stops
from .sparse import Pattern, SparseResult
from .tracer import TracedArray, _has_tracer, _objects, trace


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


def _check_mode(mode):
    if mode not in ad.MODES:
        raise ValueError(f"mode={mode!r}: use one of {ad.MODES}")


def _check_sparse(kind, sparse, triangle, single):
    """None (dense), "full" or "upper": how the results of a transform are stored."""
    if not isinstance(sparse, (bool, np.bool_)):
        raise TypeError(f"sparse must be True or False, got {sparse!r}")
    if triangle not in ("full", "upper"):
        raise ValueError(f"triangle={triangle!r}: use 'full' or 'upper'")
    if triangle == "upper" and not (sparse and kind == "hessian"):
        raise ValueError("triangle='upper' stores half of a sparse Hessian: it goes with "
                         "bd.hessian(f, sparse=True, triangle='upper')")
    if triangle == "upper" and not single:
        raise ValueError("triangle='upper' needs one differentiated argument (argnums an "
                         "int): the blocks of a Hessian in several arguments are not "
                         "symmetric one by one; stack the arguments into one vector")
    return ("upper" if triangle == "upper" else "full") if sparse else None


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
    dtape = ad.jacobian_tape(t.tape, t.wrt, "reverse", with_value=with_value)
    grads = t.per_arg(int(with_value))
    return dtape, ((np.array(0), grads) if with_value else grads)


def _value_and_grad(t):
    return _grad(t, with_value=True)


def _jacobian(t):
    dtape = ad.jacobian_tape(t.tape, t.wrt, t.mode)
    n, m = len(t.wrt), t.m
    return dtape, tuple(
        t.stored((np.arange(m)[:, None] * n + t.wrt_off[a] + np.arange(t.sizes[i])[None, :])
                 .reshape(t.out_shape + t.shapes[i]), m, t.sizes[i])
        for a, i in enumerate(t.argnums))


def _hessian(t):
    dtape, index = ad.hessian_tape(t.tape, t.wrt, t.mode)
    n, m, off = len(t.wrt), t.m, t.wrt_off
    full = np.empty((m, n, n), dtype=int)
    for (j, a, b), pos in index.items():
        full[j, a, b] = full[j, b, a] = pos
    return dtape, tuple(
        tuple(t.stored(full[:, off[a]:off[a + 1], off[c]:off[c + 1]]
                       .reshape(t.out_shape + t.shapes[i] + t.shapes[k]),
                       m * t.sizes[i], t.sizes[k])
              for c, k in enumerate(t.argnums))
        for a, i in enumerate(t.argnums))


def _jvp(t):
    m = t.m
    return ad.jvp_tape(t.tape, t.wrt), (np.arange(m).reshape(t.out_shape),
                                        (m + np.arange(m)).reshape(t.out_shape))


def _vjp(t):
    return ad.vjp_tape(t.tape, t.wrt), (np.arange(t.m).reshape(t.out_shape), t.per_arg(t.m))


def _hvp(t):
    return ad.hvp_tape(t.tape, t.wrt), t.per_arg(0)


def _first(res):
    return res[0]


def _value_first(res):
    return res[0], res[1][0]


@dataclass(frozen=True)
class _Kind:
    """One transform: its builder, what it takes besides f's arguments, its results.

    ``build(traced)`` -> (derivative tape, nested tuples of output positions);
    ``scalar``: f must return a scalar; ``extra``: "tangent" (one per argnum) or
    "cotangent" (one) follow f's arguments in a call; ``collapse(results)`` is what a
    call with an int ``argnums`` returns of the per-argnum tuples.
    """
    build: Callable
    scalar: bool = False
    extra: str = ""
    collapse: Callable = _first


TRANSFORMS = {
    "grad": _Kind(_grad, scalar=True),
    "value_and_grad": _Kind(_value_and_grad, scalar=True, collapse=_value_first),
    "jacobian": _Kind(_jacobian),
    "hessian": _Kind(_hessian, collapse=lambda res: res[0][0]),
    "jvp": _Kind(_jvp, extra="tangent", collapse=lambda res: res),
    "vjp": _Kind(_vjp, extra="cotangent", collapse=_value_first),
    "hvp": _Kind(_hvp, scalar=True, extra="tangent"),
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


def _spliced(graph, tape, inputs) -> np.ndarray:
    """``tape`` replayed into ``graph`` on input nodes ``inputs``: its outputs as Vars."""
    vals = replay(graph, tape, inputs)
    nodes = np.empty(len(tape.outputs), dtype=object)
    for k, o in enumerate(tape.outputs):
        nodes[k] = Var(graph, vals[o])
    return nodes


class Transformed:
    """A function transformed by batchdiff: call it on a batch, or inspect its work.

    ``g(*args)`` evaluates on a batch (leading axis of every argument with
    ``in_axes`` 0). ``g.tape(*args)`` is the simplified scalar program that runs for
    those arguments; ``g.source(*args, backend=...)`` the kernel source generated from it.
    """

    def __init__(self, f, kind, argnums=0, in_axes=0, backend=None, method="auto",
                 mode="auto", sparse=False, triangle="full"):
        if not callable(f):
            raise TypeError(f"batchdiff.{kind} needs a function, got {type(f).__name__}")
        if kind not in KINDS:
            raise ValueError(f"unknown transform {kind!r}")
        self.f, self.kind, self.in_axes = f, kind, in_axes
        self.single = isinstance(argnums, (int, np.integer))
        if not (self.single or isinstance(argnums, (tuple, list)) and argnums and all(
                isinstance(a, (int, np.integer)) for a in argnums)):
            raise TypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
        self.argnums = (int(argnums),) if self.single else tuple(int(a) for a in argnums)
        if len(set(self.argnums)) != len(self.argnums):
            raise ValueError(f"argnums {argnums!r} repeats an argument")
        _check_mode(mode)
        kernels.check_choice(backend, method)
        self.backend, self.method, self.mode = backend, method, mode
        self.sparse = _check_sparse(kind, sparse, triangle, self.single)
        self._programs: dict = {}
        functools.update_wrapper(self, f, updated=())

    def __repr__(self):
        return f"<batchdiff.{self.kind} of {getattr(self.f, '__name__', self.f)!r}>"

    def __getstate__(self):
        # traced programs and keyword variants are this process's caches (a program can
        # be large): a copy sent to another process traces again there
        state = dict(self.__dict__)
        state["_programs"] = {}
        state.pop("_keyword_variants", None)
        return state

    @property
    def n_extra(self) -> int:
        """How many arguments after f's own: tangents (jvp, hvp) or a cotangent (vjp)."""
        extra = TRANSFORMS[self.kind].extra
        return len(self.argnums) if extra == "tangent" else 1 if extra == "cotangent" else 0

    def _split(self, args):
        n_f = len(args) - self.n_extra
        if n_f < 1 and not self.n_extra:
            raise TypeError(f"{self.kind} was called with no arguments: call it on a batch of "
                            "points, g(X), where f takes one point as its first argument "
                            "(X of shape (B, ...)); a function of no arguments has nothing "
                            "to differentiate")
        if n_f < 1:
            what = TRANSFORMS[self.kind].extra
            raise TypeError(f"{self.kind} takes the function's arguments followed by "
                            f"{self.n_extra} {what} array(s); got {len(args)} argument(s)")
        for a in self.argnums:
            if not -n_f <= a < n_f:
                raise ValueError(f"argnums={a} but the function was given {n_f} argument(s)")
        return args[:n_f], args[n_f:]

    def _argnums(self, n_f):
        return tuple(a % n_f for a in self.argnums)

    def _program(self, shapes, dtype) -> Program:
        key = (tuple(shapes), np.dtype(dtype).str)
        prog = self._programs.get(key)
        if prog is None:
            prog = build_program(self.kind, self.f, shapes, self._argnums(len(shapes)),
                                 self.mode, dtype, self.sparse)
            if not prog.captured:        # captured values belong to one enclosing trace
                self._programs[key] = prog
        return prog

    # -- calling ------------------------------------------------------------------------
    def __call__(self, *args, out=None, **kwargs):
        """Evaluate on a batch: f's positional arguments (then tangents or a cotangent).

        Keyword arguments go to f as they are, on every point: constants of the
        derivative, shared by all points, never batched (per-point data goes in a
        positional argument). f may use them in Python control flow. The tape is traced
        for each distinct set of keyword values (arrays compare by content), so a value
        that changes at every call, passed this way, is traced (and with
        ``method="compiled"`` compiled) at every call: pass it positionally with
        ``in_axes=None`` instead. ``out=`` is the call's own keyword (the arrays to
        write the results into), so a keyword of f named ``out`` cannot be passed here:
        bind it with ``functools.partial(f, out=...)``.

        >>> import numpy as np, batchdiff as bd
        >>> g = bd.grad(lambda x, scale=1.0: scale * np.sum(x * x))
        >>> g(np.array([[1.0, 2.0]]), scale=3.0)
        array([[ 6., 12.]])
        """
        if kwargs:
            return self._with_keywords(kwargs)(*args, out=out)
        if any(_has_tracer(a) for a in args):
            self._no_trace_options(out)
            return self._inline(args)
        if any(batching.is_dask(a) for a in args):
            from . import dask_arrays
            return dask_arrays.call(self, args, out)
        prim, extra = self._split(args)
        batch = batching.prepare(prim, self.in_axes)
        prog = self._program(batch.shapes, batch.dtype)
        extra_blocks = self._extra_blocks(extra, batch, prog)
        if prog.captured:
            self._no_trace_options(out)
            return self._inline_batch(prog, batch, extra_blocks)
        name = kernels.resolve(self.backend, batch.xp)
        if out is None:
            given = [None] * len(prog.leaves)
            arrays = [_new_leaf(leaf, name, batch) for leaf in prog.leaves]
        else:
            given = outputs.match(out, _unpack(self.kind, prog.results, self.single,
                                               lambda leaf: leaf), prog.leaves)
            arrays = [outputs.check(g, leaf, batch, name) for g, leaf in zip(given, prog.leaves)]
            outputs.check_overlap(arrays, batch.blocks + extra_blocks, batch.xp)
        kernels.execute(prog.executable, batch.blocks + extra_blocks, batch,
                        [outputs.rows(a, leaf.width, batch.xp) for a, leaf in
                         zip(arrays, prog.leaves)], name, self.method, fresh=out is None)
        results = {id(leaf): (a, g) for leaf, a, g in zip(prog.leaves, arrays, given)}
        return _unpack(self.kind, prog.results, self.single,
                       lambda leaf: _result(leaf, *results[id(leaf)]))

    def _with_keywords(self, kwargs) -> Transformed:
        """This transform of ``functools.partial(f, **kwargs)``, one per distinct ``kwargs``.

        The last ``KEYWORD_VARIANTS`` are kept; values that cannot be compared (traced
        values, mutable objects other than arrays) make a fresh one for each call.
        """
        key = _keyword_key(dict(sorted(kwargs.items())))
        variants = self.__dict__.setdefault("_keyword_variants", {})
        bound = variants.pop(key, None) if key is not None else None
        if bound is None:
            bound = copy.copy(self)
            bound.f = functools.partial(self.f, **kwargs)
            bound._programs, bound._keyword_variants = {}, {}
        if key is not None:
            variants[key] = bound                  # most recent last
            for stale in list(variants)[:-KEYWORD_VARIANTS]:
                variants.pop(stale, None)
        return bound

    def _no_trace_options(self, out):
        if out is not None:
            raise TypeError(f"{self.kind}: out= has no meaning inside another transform "
                            "(the results are traced values, not arrays): call without out=")
        if self.sparse:
            raise TypeError(f"{self.kind}(sparse=True) cannot be used inside another "
                            "transform or on values it traces: use sparse=True on the "
                            "outermost transform only (a zero costs nothing in a tape)")

    def _extra_blocks(self, extra, batch, prog):
        """Tangents / cotangent as input blocks, checked against the shapes they must have."""
        if TRANSFORMS[self.kind].extra == "cotangent":
            shapes, what = [prog.out_shape], "cotangent (shaped like the function's output)"
        else:
            shapes = [batch.shapes[i] for i in self._argnums(len(batch.shapes))]
            what = "tangent (shaped like the argument it goes with)"
        blocks = []
        for k, (v, shape) in enumerate(zip(extra, shapes)):
            blocks.append(batching.extra_block(v, shape, batch, f"{self.kind} {what} #{k}"))
        return blocks

    def _inline_batch(self, prog, batch, extra_blocks):
        """A batch call inside a trace whose function closes over traced values.

        Every point's result depends on the enclosing trace, so the tape is replayed
        into that trace once per point (the batch is small in practice).
        """
        graph = active_graphs()[-1]
        captured = [graph.operand(v) for v in prog.captured]
        nodes = np.empty((batch.size, len(prog.tape.outputs)), dtype=object)
        for p in range(batch.size):
            def row(blocks):
                return [graph.const(float(x)) for b in blocks for x in b[min(p, len(b) - 1)]]
            nodes[p] = _spliced(graph, prog.tape,
                                row(batch.blocks) + captured + row(extra_blocks))
        return _unpack(self.kind, prog.results, self.single, lambda leaf: TracedArray(
            nodes[:, leaf.offset:leaf.offset + leaf.width].reshape((batch.size,) + leaf.shape),
            batch.dtype))

    def _inline(self, args):
        """Called inside another trace: splice this transform's tape into that graph."""
        stack = active_graphs()
        if not stack:
            from .errors import LeakedTracerError
            raise LeakedTracerError("a traced value was passed to a transformed function "
                                    "outside of any trace; it escaped an earlier trace")
        graph = stack[-1]
        prim, extra = self._split(args)
        objs = [_objects(a) for a in prim]
        dtype = next((a.dtype for a in args if isinstance(a, TracedArray)), np.float64)
        prog = build_program(self.kind, self.f, [o.shape for o in objs],
                             self._argnums(len(objs)), self.mode, dtype)
        inputs = [graph.operand(v) for o in objs for v in o.ravel()]
        inputs += [graph.operand(v) for v in prog.captured]
        for v in extra:
            inputs += [graph.operand(x) for x in _objects(v).ravel()]
        if len(inputs) != prog.tape.n_inputs:
            raise ShapeError(f"{self.kind}: tangent/cotangent sizes do not match the "
                             "function's arguments/output")
        nodes = _spliced(graph, prog.tape, inputs)
        return _unpack(self.kind, prog.results, self.single, lambda leaf: TracedArray(
            nodes[leaf.offset:leaf.offset + leaf.width].reshape(leaf.shape), dtype))

    # -- inspection ---------------------------------------------------------------------
    def tape(self, *args):
        """The simplified tape that runs for these arguments (a batch, as for a call).

        >>> import numpy as np, batchdiff as bd
        >>> t = bd.grad(lambda v: 3 * v[0] ** 3 - v[1] ** 2).tape(np.ones((1, 2)))
        >>> t.num_ops          # 9 * x0**2 and -2 * x1
        3
        """
        prim, _ = self._split(_shapes_of(args))
        batch = batching.prepare(prim, self.in_axes)
        return self._program(batch.shapes, batch.dtype).executable

    def source(self, *args, backend="numba"):
        """The kernel source a back end generates for these arguments, as a string.

        >>> import numpy as np, batchdiff as bd
        >>> src = bd.grad(lambda v: v[0] * v[1]).source(np.ones((1, 2)))
        >>> "def run_parallel" in src
        True
        """
        prim, extra = self._split(_shapes_of(args))
        batch = batching.prepare(prim, self.in_axes)
        prog = self._program(batch.shapes, batch.dtype)
        blocks = batch.blocks + self._extra_blocks(extra, batch, prog)
        return kernels.source(prog.executable, blocks, batch, backend, prog.widths)


def _shapes_of(args):
    """Dask arrays as stand-ins of their shape and dtype (nothing is computed)."""
    if not any(batching.is_dask(a) for a in args):
        return args
    from .dask_arrays import stand_in
    return tuple(stand_in(a) for a in args)


KEYWORD_VARIANTS = 32     # keyword-argument sets a transformed function keeps traced


def _keyword_key(value):
    """A hashable key, equal for equal keyword values (arrays by content); None if none."""
    if isinstance(value, dict):
        parts = tuple((_keyword_key(k), _keyword_key(v)) for k, v in value.items())
        return None if any(p is None for kv in parts for p in kv) else ("dict", parts)
    if isinstance(value, (TracedArray, Var)):
        return None
    if isinstance(value, np.ndarray):
        return None if value.dtype.hasobject else (
            "ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return ("scalar", value.dtype.str, value.tobytes())
    if isinstance(value, float):                       # NaN equals itself here; -0.0 is not 0.0
        return ("float", value.hex())
    if isinstance(value, (list, tuple)):
        parts = tuple(_keyword_key(v) for v in value)
        return None if any(p is None for p in parts) else (type(value).__name__, parts)
    try:
        hash(value)
    except TypeError:
        return None
    return (type(value), value)


def _new_leaf(leaf, name, batch):
    """A fresh array for ``leaf``: ``(B, *shape)`` dense, ``(B, nnz)`` sparse values."""
    if leaf.pattern is not None:
        return kernels.empty(name, batch.xp, leaf.width, batch.size, batch.dtype,
                             contiguous=True)
    rows = kernels.empty(name, batch.xp, leaf.width, batch.size, batch.dtype)
    return outputs.unflatten(rows, (batch.size,) + leaf.shape, batch.xp)


def _result(leaf, array, given):
    """What the caller gets for ``leaf``: the array, a SparseResult, or what they passed."""
    if leaf.pattern is None:
        return array
    if isinstance(given, SparseResult):
        return given
    return SparseResult(array, leaf.pattern, leaf.shape)


def grad(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto"):
    """Gradient of a scalar function at every point: ``grad(f)(X)`` has the shape of X.

    Options ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda v: 3 * v[0] ** 3 - v[1] ** 2
    >>> bd.grad(f)(np.array([[2.0, 3.0], [1.0, 1.0]]))
    array([[36., -6.],
           [ 9., -2.]])
    """
    return Transformed(f, "grad", argnums, in_axes, backend, method, mode)


def value_and_grad(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto"):
    """``(f(X), grad(f)(X))`` from one tape: values ``(B,)`` and gradients.

    Options ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> value, g = bd.value_and_grad(lambda x: np.sum(x ** 2))(np.array([[1.0, 2.0]]))
    >>> value, g
    (array([5.]), array([[2., 4.]]))
    """
    return Transformed(f, "value_and_grad", argnums, in_axes, backend, method, mode)


def jacobian(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto",
             sparse=False):
    """Jacobian at every point, shaped ``(B, *out_shape, *in_shape)``.

    With ``sparse=True`` the result is a ``SparseResult``: the pattern of structural
    non-zeros, shared by every point (CSR over the matrix view ``prod(out_shape) x
    prod(in_shape)``), and a ``(B, nnz)`` array of values; only the non-zeros are
    computed and written. Options ``argnums, in_axes, backend, method, mode``: see
    ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1], x[1] ** 2])
    >>> bd.jacobian(F)(np.array([[2.0, 3.0]]))
    array([[[4., 0.],
            [3., 2.],
            [0., 6.]]])
    >>> J = bd.jacobian(F, sparse=True)(np.array([[2.0, 3.0]]))
    >>> J.nnz, J.values
    (4, array([[4., 3., 2., 6.]]))
    """
    return Transformed(f, "jacobian", argnums, in_axes, backend, method, mode, sparse)


def hessian(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto",
            sparse=False, triangle="full"):
    """Hessian at every point, ``(B, *out_shape, *in_shape, *in_shape)``.

    Vector-valued functions get one Hessian per output. Only the upper triangle is
    computed; the result is symmetric. ``mode="forward"`` uses hyper-dual numbers
    (forward over forward), ``"reverse"`` forward over reverse.

    With ``sparse=True`` the result is a ``SparseResult`` (pattern plus ``(B, nnz)``
    values, matrix view ``prod(out_shape) * n x n``); ``triangle="upper"`` stores only
    the entries on and above each Hessian's diagonal, as sparse Cholesky solvers want.
    Options ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> bd.hessian(lambda v: v[0] ** 2 * v[1])(np.array([[1.0, 2.0]]))
    array([[[4., 2.],
            [2., 0.]]])
    >>> H = bd.hessian(lambda v: v[0] ** 2 * v[1], sparse=True, triangle="upper")
    >>> H(np.array([[1.0, 2.0]])).values       # H[0, 0] and H[0, 1]; H[1, 1] is 0
    array([[4., 2.]])
    """
    return Transformed(f, "hessian", argnums, in_axes, backend, method, mode, sparse,
                       triangle)


def jvp(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto"):
    """Jacobian-vector product: ``jvp(f)(X, V)`` is ``(f(X), J·V)``.

    Call with f's arguments, then one tangent per differentiated argument, each
    shaped like that argument (per point ``(B, ...)`` or shared). With several
    argnums, J·V sums over them.

    Options ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> y, t = bd.jvp(lambda x: x ** 2)(np.array([[1.0, 2.0]]), np.array([[1.0, 1.0]]))
    >>> t
    array([[2., 4.]])
    """
    return Transformed(f, "jvp", argnums, in_axes, backend, method, mode)


def vjp(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto"):
    """Vector-Jacobian product: ``vjp(f)(X, U)`` is ``(f(X), Jᵀ·U)``; U shaped like f(X).

    PyTorch's ``y.backward(u)`` for a non-scalar ``y``.

    Options ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> y, xbar = bd.vjp(lambda x: x ** 2)(np.array([[0.0, 1.0, 2.0]]), np.ones(3))
    >>> xbar
    array([[0., 2., 4.]])
    """
    return Transformed(f, "vjp", argnums, in_axes, backend, method, mode)


def hvp(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto"):
    """Hessian-vector product of a scalar function: ``hvp(f)(X, V)`` is H·V, shaped like X.

    Forward over reverse: it never forms H.

    Options ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> bd.hvp(lambda v: v[0] ** 2 * v[1])(np.array([[1.0, 2.0]]), np.array([[1.0, 0.0]]))
    array([[4., 2.]])
    """
    return Transformed(f, "hvp", argnums, in_axes, backend, method, mode)
