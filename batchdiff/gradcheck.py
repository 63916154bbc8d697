"""Checking a function's derivatives against central differences: ``check_grads``.

Modelled on PyTorch's ``gradcheck``/``gradgradcheck`` and JAX's ``check_grads``, for
batches: a few of the batch's points are checked, in float64, on every executor given.

- Order 1. The numerical Jacobian is the central difference of ``f``'s values,
  ``(f(x + h e_k) - f(x - h e_k)) / 2h`` for every differentiated input element ``k``.
  Forward mode: ``jvp`` with each unit tangent ``e_k`` gives column ``k`` (the
  directional derivative along ``e_k``). Reverse mode: ``vjp`` with each unit
  cotangent ``e_j`` gives row ``j``: the dot-product test ``<e_j, J e_k> = <Jᵀ e_j, e_k>``
  for every output ``j`` and input ``k``.
- Order 2. The numerical second derivatives are central differences of the reference
  interpreter's first derivatives (checked at order 1 first): ``hessian`` in each mode
  (forward: forward over forward; reverse: forward over reverse) and, for a scalar
  function in reverse mode, ``hvp`` with each unit tangent.

The function's values for the differences come from its traced tape run by the NumPy
reference interpreter in float64, so a derivative is checked against the values the
executors compute. float32 (and integer) inputs are checked in float64: both the
differences and the analytical derivatives are taken on the float64 copy of the
points, so the check tests derivative rules, not float32 rounding.
"""
from __future__ import annotations

import math

import numpy as np

from . import batching
from .api import hessian, hvp, jacobian, jvp, vjp
from .errors import BatchDiffError
from .interpreter import evaluate
from .tracer import trace

EPS = 1e-6
"""Relative step: ``h = EPS * max(1, |x_k|)``, near the optimum ``u**(1/3)`` of float64."""
RTOL = 1e-5
ATOL = 1e-5
NOISE = 32.0
"""Rounding allowance: a difference of values ``|f|`` carries about ``NOISE * u * |f| / h``."""
POINTS = 4
MODES = ("forward", "reverse")


class GradcheckError(BatchDiffError, AssertionError):
    """A derivative disagrees with central differences.

    Attributes: ``transform`` (e.g. ``"jvp (forward mode)"``), ``backend``, ``method``,
    ``point`` (index in the batch), ``output`` (index into the function's output),
    ``input`` (``(argnum, index)``, or a pair of them for second derivatives),
    ``numerical``, ``analytical``. It is an ``AssertionError``, so a failed check fails a
    test.

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda v: bd.stop_gradient(v[0]) * v[1]      # hides the derivative in v[0]
    >>> try:
    ...     bd.check_grads(f, np.array([[2.0, 3.0]]), order=1, backend="numpy")
    ... except bd.GradcheckError as e:
    ...     print(e.transform, e.input, round(e.numerical, 6), e.analytical)
    jvp (forward mode) (0, (0,)) 3.0 0.0
    """

    def __init__(self, message, *, transform, backend, method, point, output, input,
                 numerical, analytical):
        super().__init__(message)
        self.transform, self.backend, self.method = transform, backend, method
        self.point, self.output, self.input = point, output, input
        self.numerical, self.analytical = numerical, analytical


def check_grads(f, args, order=2, modes=MODES, *, points=POINTS, eps=EPS, rtol=RTOL,
                atol=ATOL, backend=None, method="auto", in_axes=0, argnums=0):
    """Check ``f``'s derivatives on a sample of the batch against central differences.

    Returns None when they agree; raises ``GradcheckError`` naming the transform, the
    executor, the point, the output and input index, and the numerical and analytical
    values of the worst disagreement.

    - ``args``: the batch, as for a transform: one array or a tuple of arguments.
    - ``order``: 1 (Jacobians) or 2 (Jacobians, then Hessians; hvp for a scalar ``f``).
    - ``modes``: "forward" (jvp, forward-over-forward Hessian) and/or "reverse" (vjp,
      forward-over-reverse Hessian, hvp).
    - ``points``: how many points of the batch to check (chosen at random, the same ones
      every call), or a sequence of their indices.
    - ``eps``: relative step; the step of element ``x_k`` is ``eps * max(1, |x_k|)``.
    - ``rtol``, ``atol``: an entry passes if ``|analytical - numerical| <= atol + rtol *
      |numerical|`` plus an allowance for rounding in the differences of values
      (``NOISE * 2**-52 * |f| / h``). The defaults suit float64 functions whose
      values are not much above 1e6 in magnitude and have no kink within ``h``
      of a checked point (a kink makes the differences meaningless there).
    - ``backend``, ``method``: the executors to check, each one value or a tuple; every
      combination is checked ("numpy" runs only with method "auto").
    - ``in_axes``, ``argnums``: as for the transforms.

    >>> import numpy as np, batchdiff as bd
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> bd.check_grads(lambda v: np.sin(v[0]) * v[1] ** 2, X, backend="numpy")
    >>> bd.check_grads(lambda v: bd.stop_gradient(np.sin(v[0])) * v[1] ** 2, X,
    ...                backend="numpy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    batchdiff.gradcheck.GradcheckError: jvp (forward mode), backend='numpy', method='auto': \
point 50, output (), input args[0][0]: numerical 0.8583571117, analytical 0, ...
    """
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if order not in (1, 2):
        raise ValueError(f"order={order!r}: check_grads checks order 1 or 2")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes={modes!r}: use 'forward', 'reverse' or both")
    executors = _executors(backend, method)
    check = _Check(f, args, in_axes, argnums, points, eps, rtol, atol)
    if check.n_points == 0 or check.m == 0 or check.n == 0:
        return None
    num_jac, jac_noise = check.numerical_jacobian()
    num_hess = hess_noise = None
    for backend_, method_ in executors:
        check.executor = (backend_, method_)
        if "forward" in modes:
            check.compare("jvp (forward mode)", num_jac, check.jvp_columns(), jac_noise)
        if "reverse" in modes:
            check.compare("vjp (reverse mode)", num_jac, check.vjp_rows(), jac_noise)
        if order < 2:
            continue
        if num_hess is None:        # differences of the reference's Jacobian: check it first
            check.executor = ("numpy", "auto")
            check.compare("jacobian (reference, differenced for order 2)", num_jac,
                          check.reference_jacobian(), jac_noise)
            num_hess, hess_noise = check.numerical_hessian()
            check.executor = (backend_, method_)
        for mode in modes:
            check.compare(f"hessian(mode={mode!r})", num_hess, check.hessian(mode), hess_noise)
        if "reverse" in modes and check.out_shape == ():
            check.compare("hvp (forward over reverse)", num_hess, check.hvp_columns(),
                          hess_noise)
    return None


def _executors(backend, method):
    backends = backend if isinstance(backend, (tuple, list)) else (backend,)
    methods = method if isinstance(method, (tuple, list)) else (method,)
    pairs = []
    for b in backends:
        for m in methods:
            if (b == "numpy" and m != "auto") or (b == "cupy" and m == "replay"):
                continue
            if (b, m) not in pairs:
                pairs.append((b, m))
    if not pairs:
        raise ValueError(f"no executor in backend={backend!r} x method={method!r}: "
                         "backend 'numpy' has only method 'auto', 'cupy' no 'replay'")
    return pairs


def _host(x):
    """A float64 NumPy copy of ``x`` (CuPy arrays come to the host)."""
    if type(x).__module__.split(".")[0] == "cupy":
        x = x.get()
    return np.array(x, dtype=np.float64)


class _Check:
    """The sampled points of one ``check_grads`` call, and its transforms' results.

    Every derivative is gathered as an array ``(P, m, n)`` (first order) or
    ``(P, m, n, n)`` (second order): P checked points, m outputs (flattened), n
    differentiated input elements (the argnums' elements, flattened, concatenated).
    """

    def __init__(self, f, args, in_axes, argnums, points, eps, rtol, atol):
        self.f, self.eps, self.rtol, self.atol = f, eps, rtol, atol
        self.single = isinstance(argnums, (int, np.integer))
        axes = batching._axes(in_axes, len(args))
        arrays = [_host(a) for a in args]
        arrays = [a if ax is None else np.moveaxis(a, ax, 0) for a, ax in zip(arrays, axes)]
        self.axes = tuple(None if ax is None else 0 for ax in axes)
        batched = [a for a, ax in zip(arrays, self.axes) if ax is not None]
        if not batched:
            raise ValueError("check_grads needs a batch: at least one argument with in_axes 0")
        size = batched[0].shape[0]
        self.index = _sample(size, points)
        self.n_points = len(self.index)
        self.args = [a if ax is None else a[self.index] for a, ax in zip(arrays, self.axes)]
        self.shapes = [a.shape if ax is None else a.shape[1:]
                       for a, ax in zip(self.args, self.axes)]
        nums = (argnums,) if self.single else tuple(argnums)
        self.argnums = tuple(int(a) % len(args) for a in nums)
        self.argnums_arg = self.argnums[0] if self.single else self.argnums
        self.sizes = [math.prod(self.shapes[a]) for a in self.argnums]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.n = int(self.offsets[-1])
        _, self.out_shape, _ = trace(f, self.shapes)
        self.m = math.prod(self.out_shape)
        self.executor = ("numpy", "auto")

    # -- the points, expanded -------------------------------------------------------
    def _per_point(self, a):
        """Argument ``a`` as ``(P, *shape)``: shared arguments repeated for every point."""
        x = self.args[a]
        if self.axes[a] is None:
            return np.broadcast_to(x, (self.n_points,) + x.shape)
        return x

    def _rows(self, repeat):
        """The arguments with every point repeated ``repeat`` times (shared ones stay)."""
        return [x if ax is None else np.repeat(x, repeat, axis=0)
                for x, ax in zip(self.args, self.axes)]

    def _unit_tangents(self):
        """Per argnum, ``(P * n, *shape)`` tangents: row ``p * n + k`` is ``e_k``."""
        eye = np.tile(np.eye(self.n), (self.n_points, 1))
        return [eye[:, self.offsets[i]:self.offsets[i + 1]].reshape((-1,) + self.shapes[a])
                for i, a in enumerate(self.argnums)]

    def _flat_inputs(self, parts, rows):
        """Per-argnum results ``(rows, *shape)`` as one array ``(rows, n)``."""
        parts = (parts,) if self.single else parts
        return np.concatenate([np.asarray(p).reshape(rows, -1) for p in parts], axis=1)

    # -- numerical derivatives --------------------------------------------------------
    def _stencil(self):
        """All arguments per point, each point repeated 2n times with +h, -h on one element.

        Returns ``(rows, width)``: rows ordered (point, element, sign); ``width``
        ``(P, n)`` is ``(x + h) - (x - h)`` as represented.
        """
        rows = [np.repeat(self._per_point(a), 2 * self.n, axis=0).copy()
                for a in range(len(self.args))]
        width = np.empty((self.n_points, self.n))
        for i, a in enumerate(self.argnums):
            x = self._per_point(a).reshape(self.n_points, -1)
            h = self.eps * np.maximum(1.0, np.abs(x))
            up, down = x + h, x - h
            width[:, self.offsets[i]:self.offsets[i + 1]] = up - down
            flat = rows[a].reshape(self.n_points, self.n, 2, -1)
            for e in range(x.shape[1]):
                k = self.offsets[i] + e
                flat[:, k, 0, e] = up[:, e]
                flat[:, k, 1, e] = down[:, e]
        return rows, width

    def _differences(self, values, width):
        """``values`` ``(P*n*2, ...)`` at the stencil rows as differences ``(P, ..., n)``."""
        v = values.reshape((self.n_points, self.n, 2) + values.shape[1:])
        up, down = v[:, :, 0], v[:, :, 1]
        w = width.reshape((self.n_points, self.n) + (1,) * (v.ndim - 3))
        diff = np.moveaxis((up - down) / w, 1, -1)
        noise = np.moveaxis(NOISE * np.finfo(np.float64).eps
                            * np.maximum(np.abs(up), np.abs(down)) / w, 1, -1)
        return diff, noise

    def numerical_jacobian(self):
        rows, width = self._stencil()
        batch = batching.prepare(rows, 0)
        tape, _, _ = trace(self.f, batch.shapes)
        values = evaluate(tape, batch.blocks, batch.size, np.float64)
        return self._differences(values, width)

    def reference_jacobian(self):
        """J from the reference interpreter's ``jacobian`` at the points: ``(P, m, n)``."""
        jac = jacobian(self.f, self.argnums_arg, in_axes=self.axes, backend="numpy")(*self.args)
        return self._flat_jacobian(jac, self.n_points)

    def numerical_hessian(self):
        """Differences of the reference interpreter's Jacobian: ``(P, m, n, n)``."""
        rows, width = self._stencil()
        jac = jacobian(self.f, self.argnums_arg, backend="numpy")(*rows)
        flat = self._flat_jacobian(jac, len(rows[0]))
        return self._differences(flat, width)

    # -- analytical derivatives ---------------------------------------------------------
    def _options(self):
        backend, method = self.executor
        return dict(in_axes=self.axes, backend=backend, method=method)

    def _flat_jacobian(self, jac, rows):
        """A jacobian result (one block per argnum) as ``(rows, m, n)``."""
        parts = (jac,) if self.single else jac
        return np.concatenate([np.asarray(p).reshape(rows, self.m, -1) for p in parts], axis=2)

    def jvp_columns(self):
        """J from jvp along each unit tangent: ``(P, m, n)``."""
        _, tangent = jvp(self.f, self.argnums_arg, **self._options())(
            *self._rows(self.n), *self._unit_tangents())
        return np.moveaxis(np.asarray(tangent).reshape(self.n_points, self.n, self.m), 1, 2)

    def vjp_rows(self):
        """J from vjp with each unit cotangent: ``(P, m, n)``."""
        cot = np.tile(np.eye(self.m), (self.n_points, 1)).reshape((-1,) + self.out_shape)
        _, xbar = vjp(self.f, self.argnums_arg, **self._options())(*self._rows(self.m), cot)
        return self._flat_inputs(xbar, self.n_points * self.m).reshape(
            self.n_points, self.m, self.n)

    def hessian(self, mode):
        """``(P, m, n, n)`` from ``hessian(mode=mode)``."""
        res = hessian(self.f, self.argnums_arg, mode=mode, **self._options())(*self.args)
        blocks = [[res]] if self.single else res
        return np.concatenate([
            np.concatenate([np.asarray(b).reshape(self.n_points, self.m, s, t)
                            for b, t in zip(row, self.sizes)], axis=3)
            for row, s in zip(blocks, self.sizes)], axis=2)

    def hvp_columns(self):
        """H of a scalar function from hvp along each unit tangent: ``(P, 1, n, n)``."""
        hv = hvp(self.f, self.argnums_arg, **self._options())(
            *self._rows(self.n), *self._unit_tangents())
        cols = self._flat_inputs(hv, self.n_points * self.n).reshape(
            self.n_points, self.n, self.n)
        return np.swapaxes(cols, 1, 2)[:, None]

    # -- comparing --------------------------------------------------------------------
    def compare(self, transform, numerical, analytical, noise):
        """Raise GradcheckError at the worst entry outside the tolerance, if any."""
        with np.errstate(invalid="ignore"):
            diff = np.abs(analytical - numerical)
            tol = self.atol + self.rtol * np.abs(numerical) + noise
            same = (numerical == analytical) | (np.isnan(numerical) & np.isnan(analytical))
            ratio = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff / tol))
        worst = np.unravel_index(np.argmax(ratio), ratio.shape)
        if not ratio[worst] > 1.0:
            return
        point = int(self.index[worst[0]])
        output = tuple(int(i) for i in np.unravel_index(worst[1], self.out_shape))
        inputs = tuple(self._input(k) for k in worst[2:])
        backend, method = self.executor
        where = " and ".join(_describe(a, i) for a, i in inputs)
        num, ana = float(numerical[worst]), float(analytical[worst])
        message = (f"{transform}, backend={backend!r}, method={method!r}: point {point}, "
                   f"output {output}, input{'s' if len(inputs) > 1 else ''} {where}: "
                   f"numerical {num:.10g}, analytical {ana:.10g}, |difference| "
                   f"{abs(num - ana):.3g} > tolerance {float(tol[worst]):.3g} "
                   f"(eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g})")
        raise GradcheckError(message, transform=transform, backend=backend, method=method,
                             point=point, output=output,
                             input=inputs[0] if len(inputs) == 1 else inputs,
                             numerical=num, analytical=ana)

    def _input(self, k):
        """Flat differentiated element ``k`` as ``(argnum, index into the argument)``."""
        i = int(np.searchsorted(self.offsets, k, side="right") - 1)
        a = self.argnums[i]
        return a, tuple(int(j) for j in np.unravel_index(k - self.offsets[i], self.shapes[a]))


def _describe(argnum, index):
    """``args[0][1, 2]`` (``args[0]`` for a scalar argument)."""
    return f"args[{argnum}]" + (f"[{', '.join(map(str, index))}]" if index else "")


def _sample(size, points):
    """Indices of the points to check: ``points`` of them at random (seed 0), or as given."""
    if isinstance(points, (int, np.integer)):
        if points < 1:
            raise ValueError(f"points={points}: check at least one point")
        if points >= size:
            return np.arange(size)
        return np.sort(np.random.default_rng(0).choice(size, int(points), replace=False))
    index = np.asarray(points, dtype=np.int64).ravel()
    if index.size and (index.min() < -size or index.max() >= size):
        raise IndexError(f"points={points!r}: the batch has {size} points")
    return index % max(size, 1)
