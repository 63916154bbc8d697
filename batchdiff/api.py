"""The public transforms: grad, value_and_grad, jacobian, hessian, jvp, vjp, hvp.

Each returns a ``Transformed`` function. Called on arrays, it traces the per-point
function once per argument shape (cached), builds the derivative tape with ``ad``,
and runs it over the batch with the chosen executor. Called on traced values (inside
another transform), it inlines its derivative tape into the enclosing trace instead,
so transforms compose: ``bd.jacobian(bd.hessian(f))`` gives third derivatives.

Every transform takes the same options:

- ``argnums``: int or tuple of ints, which positional arguments to differentiate; a
  tuple gives a tuple of results. The others are constants of the derivative.
- ``in_axes``: 0 (default), None, or one entry per argument: the batch axis of each
  argument, or None for an argument shared by all points (as ``jax.vmap``).
- ``backend``: None (chosen from the inputs), "numpy" (the reference interpreter),
  "numba" or "cupy".
- ``method``: "auto", "replay" or "compiled": the executor of the numba/cupy back ends.
- ``mode``: "auto", "forward" or "reverse": the AD mode (jacobian, hessian); "auto"
  builds both and keeps the smaller tape.
- ``sparse``: (jacobian, hessian) return a ``SparseResult``, the structural non-zeros
  only.

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

import numpy as np

from . import batching, kernels
from .batched import BatchedTransform
from .errors import LeakedTracerError, ShapeError
from .graph import Var, active_graphs, replay
from .traced_array import TracedArray, _has_tracer, _objects
from .transforms import _unpack, build_program


class Transformed(BatchedTransform):
    """A function transformed by batchdiff: call it on a batch, or inspect its work.

    ``g(*args)`` evaluates on a batch (leading axis of every argument with
    ``in_axes`` 0). ``g.tape(*args)`` is the simplified scalar program that runs for
    those arguments; ``g.source(*args, backend=...)`` the kernel source generated from it.
    Every transform (``bd.grad``, ``bd.hessian`` ...) returns one.

    >>> import numpy as np, batchdiff as bd
    >>> g = bd.hessian(lambda v: v[0] ** 2 * v[1])
    >>> g
    <batchdiff.hessian of '<lambda>'>
    >>> g(np.array([[1.0, 2.0]]))
    array([[[4., 2.],
            [2., 0.]]])
    >>> g.tape(np.ones((1, 2))).num_ops
    2
    """

    def __repr__(self):
        return f"<batchdiff.{self.kind} of {getattr(self.f, '__name__', self.f)!r}>"

    def __getstate__(self):
        # traced programs and keyword variants are this process's caches (a program can
        # be large): a copy sent to another process traces again there
        state = dict(self.__dict__)
        state["_programs"], state["_fast"] = {}, None
        state.pop("_keyword_variants", None)
        return state

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
        fast = self._fast
        if fast is not None and not kwargs and fast.takes(args, out):
            return fast(args, out)
        if kwargs:
            return self._with_keywords(kwargs)(*args, out=out)
        if any(_has_tracer(a) for a in args):
            self._no_trace_options(out)
            return self._inline(args)
        if any(batching.is_dask(a) for a in args):
            from . import dask_arrays
            return dask_arrays.call(self, args, out)
        prog, batch, extra_blocks = self._prepare(args)
        if prog.captured:
            self._no_trace_options(out)
            return self._inline_batch(prog, batch, extra_blocks)
        return self._run(prog, batch, extra_blocks, out, args)

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
            bound._programs, bound._keyword_variants, bound._fast = {}, {}, None
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

    def source(self, *args, backend=None):
        """The kernel source a back end generates for these arguments, as a string.

        ``backend``: ``"numba"`` (Python for Numba) or ``"cupy"`` (CUDA C; no GPU
        needed to print it); None: the back end a call with these arguments would run.

        >>> import numpy as np, batchdiff as bd
        >>> src = bd.grad(lambda v: v[0] * v[1]).source(np.ones((1, 2)))
        >>> "def run_serial" in src
        True
        """
        prim, extra = self._split(_shapes_of(args))
        batch = batching.prepare(prim, self.in_axes)
        prog = self._program(batch.shapes, batch.dtype)
        blocks = batch.blocks + self._extra_blocks(extra, batch, prog)
        name = backend or self.backend or kernels.resolve(None, batch.xp)
        return kernels.source(prog.executable, blocks, batch, name, prog.widths)


def _spliced(graph, tape, inputs) -> np.ndarray:
    """``tape`` replayed into ``graph`` on input nodes ``inputs``: its outputs as Vars."""
    vals = replay(graph, tape, inputs)
    nodes = np.empty(len(tape.outputs), dtype=object)
    for k, o in enumerate(tape.outputs):
        nodes[k] = Var(graph, vals[o])
    return nodes


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


def value_and_jacobian(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto",
                       sparse=False):
    """``(f(X), jacobian(f)(X))`` from one tape and one kernel.

    The value costs next to nothing: the Jacobian's tape computes it anyway. What a
    Newton step or a least-squares solver wants, ``F`` and ``J`` together. With
    ``sparse=True`` the Jacobian is a ``SparseResult`` (the value stays dense). Options
    ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> F = lambda x: np.stack([x[0] ** 2, x[0] * x[1]])
    >>> y, J = bd.value_and_jacobian(F)(np.array([[2.0, 3.0]]))
    >>> y
    array([[4., 6.]])
    >>> J
    array([[[4., 0.],
            [3., 2.]]])
    """
    return Transformed(f, "value_and_jacobian", argnums, in_axes, backend, method, mode,
                       sparse)


def value_and_hessian(f, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto",
                      sparse=False, triangle="full"):
    """``(f(X), hessian(f)(X))`` from one tape and one kernel.

    Options as ``hessian`` (``sparse``, ``triangle`` apply to the Hessian);
    ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> value, H = bd.value_and_hessian(lambda v: v[0] ** 2 * v[1])(np.array([[1.0, 2.0]]))
    >>> value
    array([2.])
    >>> H
    array([[[4., 2.],
            [2., 0.]]])
    """
    return Transformed(f, "value_and_hessian", argnums, in_axes, backend, method, mode,
                       sparse, triangle)


def value_grad_and_hessian(f, argnums=0, *, in_axes=0, backend=None, method="auto",
                           mode="auto", sparse=False, triangle="full"):
    """``(f(X), grad(f)(X), hessian(f)(X))`` of a scalar function from one tape and one
    kernel: what a Newton or trust-region minimiser needs at each point.

    Options as ``hessian`` (``sparse``, ``triangle`` apply to the Hessian);
    ``argnums, in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda v: v[0] ** 2 * v[1]
    >>> value, g, H = bd.value_grad_and_hessian(f)(np.array([[1.0, 2.0], [3.0, 1.0]]))
    >>> value
    array([2., 9.])
    >>> g
    array([[4., 1.],
           [6., 9.]])
    >>> H[1]
    array([[2., 6.],
           [6., 0.]])
    """
    return Transformed(f, "value_grad_and_hessian", argnums, in_axes, backend, method, mode,
                       sparse, triangle)


def newton_step(F, argnums=0, *, damped=False, in_axes=0, backend=None, method="auto",
                mode="auto"):
    """The Newton step ``-J(x)⁻¹ F(x)`` of a square system at every point, shaped like x.

    J is formed and factorised inside the kernel (Gaussian elimination with partial
    pivoting, straight-line code: ``batchdiff.linsolve``), so it never goes to memory.
    With ``damped=True`` the call takes a damping λ after F's arguments, one per point
    ``(B,)`` or one number for all, and the step is ``-(J + λI)⁻¹ F``. A point whose
    system is singular or holds a non-finite number gets NaN. Options ``argnums,
    in_axes, backend, method, mode`` (the Jacobian's): see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> F = lambda x: np.stack([x[0] ** 2 - 4.0, x[0] * x[1] - 2.0])
    >>> step = bd.newton_step(F)
    >>> x = np.array([[1.0, 1.0], [3.0, 0.5], [0.0, 0.0]])    # J is singular at (0, 0)
    >>> step(x)
    array([[ 1.5       , -0.5       ],
           [-0.83333333,  0.30555556],
           [        nan,         nan]])
    >>> for _ in range(6):
    ...     x = x + step(x)
    >>> x[:2]
    array([[2., 1.],
           [2., 1.]])
    >>> bd.newton_step(F, damped=True)(np.array([[1.0, 1.0]]), 1.0)   # -(J + I)⁻¹ F
    array([[1., 0.]])
    """
    kind = "damped_newton_step" if damped else "newton_step"
    return Transformed(F, kind, argnums, in_axes, backend, method, mode)


def gauss_newton_step(r, argnums=0, *, damped=False, in_axes=0, backend=None, method="auto",
                      mode="auto"):
    """The Gauss–Newton step ``-(JᵀJ)⁻¹ Jᵀr`` of a least-squares residual at every point.

    r maps n parameters to m residuals (m >= n); JᵀJ and Jᵀr are formed and solved inside
    the kernel. With ``damped=True`` the call takes λ after r's arguments (per point
    ``(B,)`` or one number) and the step is Levenberg–Marquardt's ``-(JᵀJ + λI)⁻¹ Jᵀr``.
    A singular or non-finite system gives NaN for that point. Options ``argnums,
    in_axes, backend, method, mode``: see ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> t = np.linspace(0.0, 1.0, 5)
    >>> r = lambda p: p[0] * np.exp(p[1] * t) - 2.0 * np.exp(-t)     # fit 2 exp(-t)
    >>> p = np.array([[1.0, 0.0], [3.0, -2.0]])
    >>> for _ in range(8):
    ...     p = p + bd.gauss_newton_step(r)(p)
    >>> np.round(p, 12)
    array([[ 2., -1.],
           [ 2., -1.]])
    """
    kind = "damped_gauss_newton_step" if damped else "gauss_newton_step"
    return Transformed(r, kind, argnums, in_axes, backend, method, mode)


def gauss_newton(r, argnums=0, *, in_axes=0, backend=None, method="auto", mode="auto"):
    """``(r(x), JᵀJ, Jᵀr)`` of a least-squares residual at every point, from one kernel.

    ``JᵀJ`` is ``(B, n, n)`` (for several argnums, blocks as ``hessian``'s), ``Jᵀr``
    shaped like x: the Gauss–Newton model ``½|r|² + (Jᵀr)·s + ½ sᵀ(JᵀJ)s`` for a solver
    of your own. Options ``argnums, in_axes, backend, method, mode``: see
    ``batchdiff.api``.

    >>> import numpy as np, batchdiff as bd
    >>> r = lambda p: np.stack([p[0] - 1.0, 10.0 * (p[1] - p[0] ** 2)])
    >>> res, JtJ, Jtr = bd.gauss_newton(r)(np.array([[1.0, 0.5]]))
    >>> res
    array([[ 0., -5.]])
    >>> JtJ
    array([[[ 401., -200.],
            [-200.,  100.]]])
    >>> Jtr
    array([[100., -50.]])
    """
    return Transformed(r, "gauss_newton", argnums, in_axes, backend, method, mode)


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
