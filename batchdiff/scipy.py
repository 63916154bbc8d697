"""Ready derivatives for SciPy's solvers, with the argument order and shapes SciPy documents.

- ``ivp_jacobian(fun)``: ``jac(t, y)`` for ``scipy.integrate.solve_ivp`` (Radau, BDF,
  LSODA), dense or CSR; ``ivp_jac_sparsity(fun, t0, y0)``: the pattern of J.
- ``minimize_derivatives(fun)``: ``jac``, ``hess`` and ``hessp`` for
  ``scipy.optimize.minimize``, as a dict to pass with ``**``;
  ``constraint_derivatives(fun)``: ``jac`` and ``hess`` for ``NonlinearConstraint``.
- ``least_squares_jacobian(fun)``: a dense ``jac`` for ``scipy.optimize.least_squares``;
  for residuals made of many small terms, ``batchdiff.terms.Terms`` gives ``residuals``
  and a sparse ``jacobian``.

Each callable runs a batchdiff transform of ``fun`` on one point (traced on the first
call for the shapes it meets; a batch of one, so ``method="auto"`` answers from what
is ready). Arguments after the solver's own (the solvers' ``args=``) are passed on to
``fun``; they must be numbers or NumPy arrays.

>>> import numpy as np, batchdiff as bd
>>> from scipy.integrate import solve_ivp
>>> def robertson(t, y):
...     return np.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
...                      0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
...                      3e7 * y[1] ** 2])
>>> sol = solve_ivp(robertson, (0.0, 1e3), [1.0, 0.0, 0.0], method="Radau", rtol=1e-6,
...                 atol=1e-10, jac=bd.scipy.ivp_jacobian(robertson))
>>> bool(sol.success), round(float(sol.y[:, -1].sum()), 8)          # mass is conserved
(True, 1.0)
"""
from __future__ import annotations

import numpy as np

from .api import grad, hessian, hvp, jacobian


def _one(*args):
    """Each argument as a batch of one point."""
    return tuple(np.asarray(a, dtype=np.float64)[None] for a in args)


class _TimeFirst:
    """``fun(t, y, *args)`` as a function of ``(y, t, *args)``, y the argument differentiated."""

    def __init__(self, fun):
        self.fun = fun
        self.__name__ = getattr(fun, "__name__", type(fun).__name__)

    def __call__(self, y, t, *args):
        return self.fun(t, y, *args)


def ivp_jacobian(fun, *, sparse=False, backend=None, method="auto"):
    """``jac(t, y, *args)``: the Jacobian of ``fun(t, y, *args)`` in ``y``, for ``solve_ivp``.

    ``fun`` is the right-hand side as SciPy takes it (``y`` of shape ``(n,)``), written
    with NumPy functions of ``y``. With ``sparse=True`` ``jac`` returns a
    ``scipy.sparse.csr_array`` of the structural non-zeros, what ``Radau`` and ``BDF``
    factorise with a sparse LU.

    >>> import numpy as np
    >>> jac = ivp_jacobian(lambda t, y: np.stack([y[1], -np.sin(y[0]) - 0.1 * t * y[1]]))
    >>> jac(2.0, np.array([0.0, 1.0]))
    array([[ 0. ,  1. ],
           [-1. , -0.2]])
    """
    transformed = jacobian(_TimeFirst(fun), sparse=sparse, backend=backend, method=method)

    def jac(t, y, *args):
        J = transformed(*_one(y, t, *args))
        return J.to_scipy(0).copy() if sparse else J[0]

    return jac


def ivp_jac_sparsity(fun, t0, y0, *args):
    """The structural non-zeros of ``fun``'s Jacobian in ``y``: a CSR matrix of ones, for
    ``solve_ivp``'s ``jac_sparsity`` (when it estimates J by differences).

    >>> import numpy as np
    >>> S = ivp_jac_sparsity(lambda t, y: np.stack([y[1], y[0] * y[2], y[2]]), 0.0, np.ones(3))
    >>> S.toarray()
    array([[0., 1., 0.],
           [1., 0., 1.],
           [0., 0., 1.]])
    """
    J = jacobian(_TimeFirst(fun), sparse=True, backend="numpy")(*_one(y0, t0, *args))
    A = J.to_scipy(0).copy()
    A.data[:] = 1.0
    return A


def minimize_derivatives(fun, *, backend=None, method="auto") -> dict:
    """``{"jac": ..., "hess": ..., "hessp": ...}`` of a scalar ``fun(x, *args)``, for
    ``scipy.optimize.minimize(fun, x0, **minimize_derivatives(fun))``.

    Methods that take no Hessian warn about the extra keywords; pick what the method
    uses (``jac`` and ``hessp`` for ``trust-krylov``, ``jac`` and ``hess`` for
    ``trust-exact``).

    >>> import numpy as np
    >>> from scipy.optimize import minimize
    >>> rosen = lambda x: np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    >>> res = minimize(rosen, np.zeros(5), method="trust-exact", **{
    ...     k: v for k, v in minimize_derivatives(rosen).items() if k != "hessp"})
    >>> bool(res.success), np.round(res.x, 6)
    (True, array([1., 1., 1., 1., 1.]))
    """
    g = grad(fun, backend=backend, method=method)
    H = hessian(fun, backend=backend, method=method)
    Hv = hvp(fun, backend=backend, method=method)

    def jac(x, *args):
        return g(*_one(x, *args))[0]

    def hess(x, *args):
        return H(*_one(x, *args))[0]

    def hessp(x, p, *args):
        return Hv(*_one(x, *args, p))[0]

    return {"jac": jac, "hess": hess, "hessp": hessp}


class _Weighted:
    """``v · fun(x)``: the function whose Hessian is ``NonlinearConstraint``'s ``hess``."""

    def __init__(self, fun):
        self.fun = fun
        self.__name__ = getattr(fun, "__name__", type(fun).__name__)

    def __call__(self, x, v):
        return (v * self.fun(x)).sum()


def constraint_derivatives(fun, *, backend=None, method="auto") -> dict:
    """``{"jac": ..., "hess": ...}`` of constraints ``fun(x)`` (m values), for
    ``scipy.optimize.NonlinearConstraint(fun, lb, ub, **constraint_derivatives(fun))``.

    ``jac(x)`` is the ``(m, n)`` Jacobian; ``hess(x, v)`` the ``(n, n)`` matrix
    ``Σ v_i ∇²fun_i(x)``, as SciPy's ``trust-constr`` asks for it: the Hessian of
    ``v · fun(x)``, one tape, never the m Hessians.

    >>> import numpy as np
    >>> from scipy.optimize import NonlinearConstraint, minimize
    >>> circle = lambda x: np.stack([x[0] ** 2 + x[1] ** 2])
    >>> d = constraint_derivatives(circle)
    >>> d["hess"](np.array([1.0, 2.0]), np.array([3.0]))
    array([[6., 0.],
           [0., 6.]])
    >>> on_circle = NonlinearConstraint(circle, 1.0, 1.0, **d)
    >>> res = minimize(lambda x: x[0] + x[1], np.array([1.0, 0.0]), method="trust-constr",
    ...                jac=lambda x: np.ones(2), hess=lambda x: np.zeros((2, 2)),
    ...                constraints=[on_circle])
    >>> np.round(res.x, 4)                                   # -(1, 1) / sqrt(2)
    array([-0.7071, -0.7071])
    """
    J = jacobian(fun, backend=backend, method=method)
    H = hessian(_Weighted(fun), backend=backend, method=method)

    def jac(x):
        return J(*_one(x))[0]

    def hess(x, v):
        return H(*_one(x, v))[0]

    return {"jac": jac, "hess": hess}


def least_squares_jacobian(fun, *, backend=None, method="auto"):
    """``jac(x, *args)``: the dense ``(m, n)`` Jacobian of residuals ``fun(x, *args)``,
    for ``scipy.optimize.least_squares(fun, x0, jac=least_squares_jacobian(fun))``.

    >>> import numpy as np
    >>> t = np.linspace(0, 1, 4)
    >>> jac = least_squares_jacobian(lambda p: p[0] * np.exp(p[1] * t))
    >>> jac(np.array([2.0, 0.0])).shape
    (4, 2)
    """
    J = jacobian(fun, backend=backend, method=method)

    def jac(x, *args):
        return J(*_one(x, *args))[0]

    return jac
