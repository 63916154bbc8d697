"""batchdiff: derivatives of a small NumPy function at millions of points at once.

Write the function for one point; batchdiff traces it into a scalar tape,
differentiates the tape, and runs it over the whole batch.

>>> import numpy as np, batchdiff as bd
>>> f = lambda v: 3 * v[0] ** 3 - v[1] ** 2
>>> bd.grad(f)(np.array([[2.0, 3.0]]))
array([[36., -6.]])
"""
import logging

from . import numpy, scipy, special
from .api import (Transformed, gauss_newton, gauss_newton_step, grad, hessian, hvp, jacobian,
                  jvp, newton_step, value_and_grad, value_and_hessian, value_and_jacobian,
                  value_grad_and_hessian, vjp)
from .errors import (BackendUnavailableError, BatchDiffError, CacheError, CacheWarning,
                     CompileWarning, LeakedTracerError, ShapeError, TracerConversionError,
                     UnsupportedOperationError)
from .gradcheck import GradcheckError, check_grads
from .graph import Tape
from .numpy import detach, stop_gradient
from .sparse import Pattern, SparseResult
from .terms import Terms

__version__ = "0.1.0"

# quiet by default: compiles and Dask workers log to "batchdiff.*" at INFO for those who ask
logging.getLogger("batchdiff").addHandler(logging.NullHandler())

__all__ = [
    "grad", "value_and_grad", "jacobian", "hessian", "jvp", "vjp", "hvp",
    "value_and_jacobian", "value_and_hessian", "value_grad_and_hessian",
    "newton_step", "gauss_newton_step", "gauss_newton", "Terms",
    "stop_gradient", "detach", "numpy", "Tape", "Transformed", "SparseResult", "Pattern",
    "check_grads", "GradcheckError",
    "BatchDiffError", "TracerConversionError", "UnsupportedOperationError",
    "LeakedTracerError", "ShapeError", "BackendUnavailableError", "CacheError", "CacheWarning",
    "CompileWarning",
]
