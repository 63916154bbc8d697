"""Special functions on traced values: the error function, log-gamma and its
derivatives, the logistic and normal distributions, log-sum-exp.

Inside a traced function the ufuncs of ``scipy.special`` work as NumPy's do
(``scipy.special.erf(x)``, ``gammaln``, ``digamma``/``psi``, ``expit``, ``logit``,
``xlogy``, ``xlog1py``, ``ndtr``, ``log_ndtr``, ``betaln``), and so do ``np.logaddexp``
and ``np.logaddexp2``. SciPy's Python-level functions convert their arguments with
``np.asarray``, which a traced value cannot pass; this module has them under the same
names and signatures: ``logsumexp``, ``softmax``, ``log_softmax``, ``polygamma``. On
plain arrays they are SciPy's.

``erf``, ``erfc`` and ``gammaln`` are primitive ops (``ops.py``: the C library's, in every
executor). The others are written here in terms of primitive ops, so their derivatives
of every order come from the ops' rules. Digamma is the recurrence
ψ(x) = ψ(x + 10) - Σ 1/(x + k) up to an asymptotic series, a Taylor series about its
positive root (where the recurrence would cancel), and the reflection
ψ(x) = ψ(1 - x) - π / tan(π x) below zero; ``polygamma(n, x)`` is the Hurwitz zeta
function the same way, for x > 0. Where a formula has branches, each branch reads its
argument through its own ``where`` (the "double where"), so a branch that is not taken
cannot put an infinity or NaN into a derivative.

>>> import numpy as np, batchdiff as bd
>>> from scipy import special
>>> f = lambda t: special.gammaln(t[0]) + special.erf(t[1])
>>> bd.grad(f)(np.array([[1.0, 0.0]]))      # (digamma(1), 2 / sqrt(pi))
array([[-0.57721566,  1.12837917]])
"""
from __future__ import annotations

import math
import sys

import numpy as np

from .graph import Var, apply
from .ops import OPS

__all__ = ["logsumexp", "softmax", "log_softmax", "polygamma", "digamma", "expit", "logit",
           "ndtr", "log_ndtr", "xlogy", "xlog1py"]


def _f(name):
    """Op ``name`` on Vars, or folded in float64 on plain numbers (NaN, not an error)."""
    value = OPS[name].value

    def fn(*args):
        if any(isinstance(a, Var) for a in args):
            return apply(name, args)
        with np.errstate(all="ignore"):
            return np.float64(value(*(np.float64(a) for a in args)))
    return fn


def _where(c, a, b):
    return apply("where", (c, a, b)) if isinstance(c, Var) else (a if c else b)


_exp, _log, _log1p, _erfc, _lgamma, _tan, _atanh, _rint, _floor, _stop, _max, _abs = (
    _f(n) for n in ("exp", "log", "log1p", "erfc", "lgamma", "tan", "atanh", "rint", "floor",
                    "stop", "max", "abs"))
_erf = _f("erf")


# -- digamma and polygamma ------------------------------------------------------------------

SHIFT = 10.0      # the recurrence moves x below this up by SHIFT, into the asymptotic series
# ψ(z) ~ log z - 1/(2z) - Σ B_2j / (2j z^2j): the B_2j / 2j for j = 1 ... 7 (next term
# below 1e-16 of ψ for z >= SHIFT)
_PSI_ASYMPTOTIC = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12)
# ψ's positive root x0 as a double and its remainder, and the Taylor coefficients of ψ
# about it, c_k = (-1)^(k+1) ζ(k + 1, x0), k = 1 ... 40, from mpmath at 50 digits:
# [float((-1)**(k+1) * mp.zeta(k+1, mp.findroot(mp.digamma, 1.46))) for k in range(1, 41)]
# (on |x - x0| < 0.5 the 41st term is below 1e-17 of the value)
_ROOT, _ROOT_LO = 1.4616321449683622, 9.549995429965697e-17
_ROOT_RADIUS = 0.5
_PSI_ROOT_TAYLOR = (
    0.9676722454476212, -0.4427631689835921, 0.258499760955651, -0.16394270544240652,
    0.10782405069126237, -0.07219956125645471, 0.04880428816414311, -0.03316112647484736,
    0.022597648232218104, -0.01542476590494896, 0.010538791616612175,
    -0.007204534386356869, 0.004926781395729853, -0.003369801655439328,
    0.002305126326734928, -0.0015769367714301972, 0.0010788252019162967,
    -0.0007380709389960052, 0.000504953265834602, -0.0003454680251063077,
    0.00023635601564027053, -0.00016170622091974803, 0.0001106337276874741,
    -7.569179582195066e-05, 5.178575795222081e-05, -3.5430070947659604e-05,
    2.424006611860132e-05, -1.6584242271854135e-05, 1.134638458466385e-05,
    -7.762817668462094e-06, 5.3110609208898636e-06, -3.6336507898010456e-06,
    2.486022733129538e-06, -1.7008538854332607e-06, 1.1636675363548843e-06,
    -7.96142543124197e-07, 5.446941930669446e-07, -3.7266161283438227e-07,
    2.549626552021554e-07, -1.7443695117727745e-07)


def _horner(coefficients, t):
    """Σ coefficients[k] t^k."""
    acc = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        acc = acc * t + c
    return acc


def _shifted(x, shift):
    """(z, small, xs): z = x + shift where x < shift (``small``) else x; xs is x where
    small and 1 elsewhere, for the recurrence's sum."""
    small = x < shift
    return _where(small, x + shift, x), small, _where(small, x, 1.0)


def _digamma_nonnegative(x):
    """ψ(x) for x >= 0 without cancellation: the asymptotic series from SHIFT up; below
    it the Taylor series about the root at y = x - m, |y - x0| < 1/2, and the recurrence
    ψ(x) = ψ(y) + Σ_{k=1..m} 1/(x - k) (m >= 1: positive terms; m = -1: -1/x, which
    dominates), in which x - m is exact."""
    large = x >= SHIFT
    z = _where(large, x, SHIFT)
    w = 1.0 / (z * z)
    asymptotic = _log(z) - 0.5 / z - w * _horner(_PSI_ASYMPTOTIC, w)
    xs = _where(large, 1.0, x)
    m = _floor(xs - (_ROOT - _ROOT_RADIUS))
    t = ((xs - m) - _ROOT) - _ROOT_LO
    psi = t * _horner(_PSI_ROOT_TAYLOR, t)
    for k in range(1, int(SHIFT)):
        taken = m >= float(k)
        psi = psi + _where(taken, 1.0 / _where(taken, xs - float(k), 1.0), 0.0)
    below = m < 0.0
    psi = psi - _where(below, 1.0 / _where(below, xs, 1.0), 0.0)
    return _where(large, asymptotic, psi)


def digamma(x):
    """ψ(x) = d/dx log Γ(x) of one element (a Var or a number), as ``scipy.special.psi``.

    Below 0 by the reflection ψ(1 - x) - π / tan(π x), with π x reduced exactly; -inf at
    0 and NaN at the negative integers, as SciPy. Accuracy against mpmath:
    ``tests/test_special.py``.

    >>> float(digamma(1.0))                         # -Euler's gamma
    -0.5772156649015329
    """
    negative = x < 0.0
    xn = _where(negative, x, -0.5)                 # tan(pi r) != 0 in the branch not taken
    r = xn - _rint(xn)                             # exact: pi r is the reduced angle
    reflection = math.pi / _tan(math.pi * r)
    pole = _where(negative, r == 0.0, 0.0)
    psi = _digamma_nonnegative(_where(negative, 1.0 - x, x))
    return _where(pole, math.nan, _where(negative, psi - reflection, psi))


# Hurwitz ζ(s, z) ~ z^(1-s)/(s-1) + z^(-s)/2 + Σ B_2j/(2j)! (s)_(2j-1) z^(1-s-2j), j = 1..8
_B2J = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510)


def _hurwitz_zeta(s: int, x):
    """ζ(s, x) = Σ_k (x + k)^-s for an integer s >= 2 and x > 0: the recurrence up to
    z >= SHIFT + 2s (the series' terms grow with s), then the asymptotic series."""
    shift = int(SHIFT) + 2 * s
    z, small, xs = _shifted(x, float(shift))
    zs = z ** float(-s)
    total = zs * z / (s - 1.0) + 0.5 * zs
    w = 1.0 / (z * z)
    term = zs / z                       # z^(1 - s - 2j) for j = 1
    rising, factorial = float(s), 2.0   # (s)_(2j-1), (2j)!
    for j, b in enumerate(_B2J, start=1):
        total = total + (b / factorial * rising) * term
        term = term * w
        rising *= (s + 2 * j - 1) * (s + 2 * j)
        factorial *= (2 * j + 1) * (2 * j + 2)
    recurrence = xs ** float(-s)
    for k in range(1, shift):
        recurrence = recurrence + (xs + float(k)) ** float(-s)
    return _where(small, total + recurrence, total)


def _polygamma(n: int, x):
    if n == 0:
        return digamma(x)
    value = (-1.0) ** (n + 1) * math.factorial(n) * _hurwitz_zeta(n + 1, _where(x > 0.0, x, 1.0))
    return _where(x > 0.0, value, math.nan)


# -- the logistic and normal distributions, x log y ----------------------------------------

def expit(x):
    """1 / (1 + exp(-x)), as exp(x) / (1 + exp(x)) below 0 so no exp overflows."""
    positive = x >= 0.0
    e = _exp(_where(positive, -x, x))            # exp(-|x|), differentiable at 0
    return _where(positive, 1.0 / (1.0 + e), e / (1.0 + e))


def logit(p):
    """log(p / (1 - p)): 2 atanh(2p - 1) on [1/4, 3/4], where 2p - 1 is exact and the
    logarithms' difference would cancel, else log p - log1p(-p)."""
    middle = _abs(p - 0.5) <= 0.25
    pm = _where(middle, p, 0.5)
    po = _where(middle, 0.125, p)
    return _where(middle, 2.0 * _atanh(2.0 * pm - 1.0), _log(po) - _log1p(-po))


_SQRT1_2, _SQRT1_2_LO = 0.7071067811865476, -4.833646656726457e-17   # 1/sqrt 2, remainder
_SPLIT = 134217729.0                   # 2^27 + 1: Veltkamp's split into 26-bit halves
_SQRT1_2_HI = 0.70710676908493042      # _SQRT1_2's high 26 bits
_SQRT1_2_MID = _SQRT1_2 - _SQRT1_2_HI
_ERFC_SLOPE = -2.0 / math.sqrt(math.pi)
# below it the asymptotic series: from -12 on erfc's value would be subnormal in float32
# (and 0 from -13.5); there 17 terms leave an error of 31!!/12^32, 5e-18 of the value
_LOG_NDTR_FAR = -12.0
# log(1 - 1/x^2 + 3/x^4 - ...): the series' coefficients (-1)^k (2k - 1)!!, k = 0 ... 16
_MILLS = (
    1.0, -1.0, 3.0, -15.0, 105.0, -945.0, 10395.0, -135135.0, 2027025.0, -34459425.0,
    654729075.0, -13749310575.0, 316234143225.0, -7905853580625.0, 213458046676875.0,
    -6190283353629375.0, 1.9189878396251062e+17)


def _erfc_scaled_argument(x):
    """erfc(-x / sqrt 2) with the product x / sqrt 2 carried to twice the working
    precision (Dekker's product; a correction erfc'(z) dz): rounding z alone would cost
    2 z^2 ulp, 1400 at x = -37."""
    xs = _where(_abs(x) < 1e30, x, 0.0)           # no overflow of _SPLIT * x in float32
    t = _SPLIT * xs
    hi = t - (t - xs)
    lo = xs - hi
    z = -(xs * _SQRT1_2)
    dz = -((((hi * _SQRT1_2_HI - xs * _SQRT1_2) + hi * _SQRT1_2_MID + lo * _SQRT1_2_HI)
            + lo * _SQRT1_2_MID) + xs * _SQRT1_2_LO)
    z = _where(_abs(x) < 1e30, z, -(x * _SQRT1_2))
    return _erfc(z) + _ERFC_SLOPE * _exp(-(z * z)) * dz


def ndtr(x):
    """The standard normal CDF, erfc(-x / sqrt 2) / 2."""
    return 0.5 * _erfc_scaled_argument(x)


def log_ndtr(x):
    """log of the standard normal CDF: log1p of -erfc / 2 above -1, log of erfc / 2 down
    to -12, then -x²/2 - log(-x sqrt(2 pi)) + log of the asymptotic series."""
    upper = x > -1.0
    far = x < _LOG_NDTR_FAR
    xu = _where(upper, x, 0.0)
    xm = _where(upper, -1.0, _where(far, -2.0, x))
    xf = _where(far, x, 2.0 * _LOG_NDTR_FAR)
    w = 1.0 / (xf * xf)
    tail = (-0.5 * xf * xf - _log(-xf) - 0.5 * math.log(2 * math.pi)
            + _log(_horner(_MILLS, w)))
    return _where(upper, _log1p(-0.5 * _erfc_scaled_argument(-xu)),
                  _where(far, tail, _log(0.5 * _erfc_scaled_argument(xm))))


def xlogy(x, y):
    """x log y, 0 where x = 0 (unless y is NaN), as ``scipy.special.xlogy``. For y > 0
    that is x log y itself, whose derivative in x is log y, at x = 0 too; only where
    log y is not finite (y <= 0) does x = 0 take the value 0 (and derivatives 0)."""
    zero = (x == 0.0) * (y <= 0.0)
    return _where(zero, 0.0, x * _log(_where(zero, 1.0, y)))


def xlog1py(x, y):
    """x log1p(y), 0 where x = 0 (unless y is NaN); as ``xlogy``, the override is where
    log1p y is not finite (y <= -1)."""
    zero = (x == 0.0) * (y <= -1.0)
    return _where(zero, 0.0, x * _log1p(_where(zero, 0.0, y)))


def _betaln(a, b):
    return _lgamma(a) + _lgamma(b) - _lgamma(a + b)


def _logaddexp(a, b):
    """log(exp a + exp b) about m = max(a, b), held constant (the gradient is the softmax
    exactly, and smooth at a = b); m is 0 where it is infinite."""
    m = _max(a, b)
    m = _stop(_where(_abs(m) < math.inf, m, 0.0))
    return m + _log(_exp(a - m) + _exp(b - m))


_LN2 = math.log(2.0)


def _logaddexp2(a, b):
    return _logaddexp(a * _LN2, b * _LN2) * (1.0 / _LN2)


# -- registration: ufunc -> scalar function of elements ---------------------------------------

NUMPY_UFUNCS = {np.logaddexp: _logaddexp, np.logaddexp2: _logaddexp2}


def scipy_ufuncs() -> dict:
    """``scipy.special``'s ufuncs that traced values support, by the scalar function of
    graph elements that computes each (empty without SciPy)."""
    special = sys.modules.get("scipy.special")
    if special is None:
        return {}
    table = {"erf": _erf, "erfc": _erfc, "gammaln": _lgamma, "psi": digamma,
             "expit": expit, "logit": logit, "ndtr": ndtr, "log_ndtr": log_ndtr,
             "xlogy": xlogy, "xlog1py": xlog1py, "betaln": _betaln}
    return {getattr(special, name): fn for name, fn in table.items() if hasattr(special, name)}


# -- SciPy's Python-level functions, traced ---------------------------------------------------

def _traced(*args):
    from .traced_array import TracedArray
    return any(isinstance(a, (TracedArray, Var)) for a in args)


def _scipy_special():
    try:
        from scipy import special
    except ImportError as error:          # pragma: no cover - SciPy is a test dependency
        raise ImportError("batchdiff.special on plain arrays calls SciPy's: "
                          "pip install scipy (or batchdiff[sparse])") from error
    return special


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``scipy.special.logsumexp`` for traced values: log Σ b exp(a) along ``axis``.

    Computed about the largest entry, held constant, so the gradient is exactly the
    softmax and no exp overflows. ``return_sign`` is not supported on traced values.

    >>> import numpy as np, batchdiff as bd
    >>> bd.grad(lambda x: bd.special.logsumexp(x))(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    if not _traced(a, b):
        return _scipy_special().logsumexp(a, axis=axis, b=b, keepdims=keepdims,
                                          return_sign=return_sign)
    if return_sign:
        from .errors import UnsupportedOperationError
        raise UnsupportedOperationError(
            "batchdiff.special.logsumexp(return_sign=True) is not supported on traced "
            "values: with b >= 0 the sign is 1; otherwise compute the sum and its sign apart")
    m = np.max(a, axis=axis, keepdims=True)
    m = _stop_array(np.where(np.abs(m) < np.inf, m, 0.0))
    e = np.exp(a - m)
    if b is not None:
        e = e * b
    out = np.log(np.sum(e, axis=axis, keepdims=True)) + m
    if not keepdims:
        out = np.squeeze(out, axis=axis) if axis is not None else np.reshape(out, ())
    return out


def _stop_array(a):
    from .numpy import stop_gradient
    return stop_gradient(a)


def log_softmax(x, axis=None):
    """``scipy.special.log_softmax`` for traced values: x - logsumexp(x).

    >>> import numpy as np, batchdiff as bd
    >>> bd.jacobian(lambda x: bd.special.log_softmax(x))(np.zeros((1, 2)))
    array([[[ 0.5, -0.5],
            [-0.5,  0.5]]])
    """
    if not _traced(x):
        return _scipy_special().log_softmax(x, axis=axis)
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=None):
    """``scipy.special.softmax`` for traced values: exp(x - logsumexp(x)).

    >>> import numpy as np, batchdiff as bd
    >>> bd.jacobian(lambda x: bd.special.softmax(x))(np.zeros((1, 2)))
    array([[[ 0.25, -0.25],
            [-0.25,  0.25]]])
    """
    if not _traced(x):
        return _scipy_special().softmax(x, axis=axis)
    return np.exp(log_softmax(x, axis=axis))


def polygamma(n, x):
    """``scipy.special.polygamma`` for traced ``x`` and a constant integer order ``n``:
    the n-th derivative of digamma; x > 0 for n >= 1 (NaN elsewhere).

    >>> import numpy as np, batchdiff as bd
    >>> round(float(bd.grad(lambda x: bd.special.polygamma(1, x[0]))(np.ones((1, 1)))[0, 0]), 10)
    -2.4041138063
    """
    if not _traced(x):
        return _scipy_special().polygamma(n, x)
    orders = np.asarray(n)
    if orders.dtype.kind not in "iu" and not np.all(orders == np.round(orders)) or np.any(orders < 0):
        raise ValueError(f"polygamma's order n must be a non-negative integer, got {n!r}")
    from .traced_array import TracedArray, _objects, _wrap
    if orders.ndim:
        raise ValueError("batchdiff.special.polygamma takes one integer order n; "
                         "for several, call it once per order")
    order = int(orders)
    if isinstance(x, Var):
        return _polygamma(order, x)
    result = np.frompyfunc(lambda e: _polygamma(order, e), 1, 1)(_objects(x))
    return _wrap(result, x.dtype) if isinstance(x, TracedArray) else result
