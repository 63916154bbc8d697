"""Every primitive op of ``batchdiff.ops.OPS``, table-driven.

Each op gets a row in ``CASES``: a function that reaches the op through the public
NumPy interface, the same function as a SymPy expression (the independent oracle),
and a domain where the op is smooth. For every row we check, in float64 and float32,
the value, every first partial (against SymPy and against central finite differences
of the plain NumPy function) and every second partial (against SymPy), so each local
partial in the op table and each partial of a partial is exercised. A completeness test
makes a new op without a row here fail.
"""
from __future__ import annotations

import itertools
import math
import re
import string
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import sympy
from scipy import special

import batchdiff as bd
from batchdiff.graph import Graph, Var
from batchdiff.kernels import vector_math
from batchdiff.kernels.printing import branching_helpers
from batchdiff.ops import COMPARISONS, OPS
from batchdiff.special import scipy_ufuncs
from batchdiff.tracer import UFUNCS, trace

N_POINTS = 32
BACKEND = "numpy"     # the reference interpreter: the executor every other one answers to


# -- the table ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    op: str
    fn: Callable                 # NumPy-level function of `arity` scalars
    sym: Callable | None         # SymPy builder of the same function
    domain: tuple                # per argument: tuple of (lo, hi) intervals, or a grid list
    kind: str = "smooth"         # "smooth" | "zero" (derivative identically 0) | "stop"
    separate: float = 0.0        # reject points whose first two arguments are this close
    # IEEE arithmetic fixes the result exactly (no math library rounds it): the spellings
    # and the Numba executors give the value rule's bits at signed zeros, infinities, NaN
    exact: bool = False
    nan_partials: bool = True    # a NaN argument makes a partial NaN (False: NaN picks a
    #                              branch, or the partials are constants)

    @property
    def arity(self):
        return len(self.domain)


WIDE = ((-2.0, 2.0),)
NONZERO = ((-2.0, -0.3), (0.3, 2.0))
GRID = [-1.0, -0.5, 0.0, 0.5, 1.0]   # comparisons: small grid, so ties happen


def _indicator(rel):
    return sympy.Piecewise((1, rel), (0, True))


CASES = [
    # arithmetic
    Case("add", lambda a, b: np.add(a, b), lambda a, b: a + b, (WIDE, WIDE), exact=True,
         nan_partials=False),
    Case("sub", lambda a, b: np.subtract(a, b), lambda a, b: a - b, (WIDE, WIDE), exact=True,
         nan_partials=False),
    Case("mul", lambda a, b: np.multiply(a, b), lambda a, b: a * b, (WIDE, WIDE), exact=True),
    Case("div", lambda a, b: np.true_divide(a, b), lambda a, b: a / b,
         (WIDE, ((-2.0, -0.5), (0.5, 2.0))), exact=True),
    Case("neg", lambda a: np.negative(a), lambda a: -a, (WIDE,), exact=True, nan_partials=False),
    Case("pow", lambda a, b: np.power(a, b), lambda a, b: a ** b, (((0.5, 2.0),), WIDE)),
    # powers, exponentials, logarithms
    Case("sqrt", lambda a: np.sqrt(a), sympy.sqrt, (((0.1, 5.0),),)),
    Case("exp", lambda a: np.exp(a), sympy.exp, (WIDE,)),
    Case("log", lambda a: np.log(a), sympy.log, (((0.1, 5.0),),)),
    Case("log1p", lambda a: np.log1p(a), lambda a: sympy.log(1 + a), (((-0.5, 5.0),),)),
    Case("expm1", lambda a: np.expm1(a), lambda a: sympy.exp(a) - 1, (WIDE,)),
    Case("cbrt", lambda a: np.cbrt(a), lambda a: sympy.sign(a) * sympy.Abs(a) ** sympy.Rational(1, 3),
         (NONZERO,)),
    # special functions (scipy.special's ufuncs reach them)
    Case("erf", lambda a: special.erf(a), sympy.erf, (WIDE,)),
    Case("erfc", lambda a: special.erfc(a), sympy.erfc, (WIDE,)),
    Case("lgamma", lambda a: special.gammaln(a), sympy.loggamma, (((0.2, 6.0),),)),
    # trigonometric and hyperbolic
    Case("sin", lambda a: np.sin(a), sympy.sin, (((-3.0, 3.0),),)),
    Case("cos", lambda a: np.cos(a), sympy.cos, (((-3.0, 3.0),),)),
    Case("tan", lambda a: np.tan(a), sympy.tan, (((-1.2, 1.2),),)),
    Case("asin", lambda a: np.arcsin(a), sympy.asin, (((-0.9, 0.9),),)),
    Case("acos", lambda a: np.arccos(a), sympy.acos, (((-0.9, 0.9),),)),
    Case("atan", lambda a: np.arctan(a), sympy.atan, (((-3.0, 3.0),),)),
    Case("atan2", lambda a, b: np.arctan2(a, b), sympy.atan2, (WIDE, NONZERO)),
    Case("sinh", lambda a: np.sinh(a), sympy.sinh, (WIDE,)),
    Case("cosh", lambda a: np.cosh(a), sympy.cosh, (WIDE,)),
    Case("tanh", lambda a: np.tanh(a), sympy.tanh, (WIDE,)),
    Case("asinh", lambda a: np.arcsinh(a), sympy.asinh, (((-3.0, 3.0),),)),
    Case("acosh", lambda a: np.arccosh(a), sympy.acosh, (((1.1, 4.0),),)),
    Case("atanh", lambda a: np.arctanh(a), sympy.atanh, (((-0.9, 0.9),),)),
    Case("hypot", lambda a, b: np.hypot(a, b), lambda a, b: sympy.sqrt(a ** 2 + b ** 2),
         (NONZERO, NONZERO)),
    # piecewise (away from the kinks)
    Case("abs", lambda a: np.abs(a), sympy.Abs, (NONZERO,), exact=True),
    Case("sign", lambda a: np.sign(a), sympy.sign, (NONZERO,), kind="zero", exact=True),
    Case("max", lambda a, b: np.maximum(a, b), sympy.Max, (WIDE, WIDE), separate=0.05,
         exact=True, nan_partials=False),
    Case("min", lambda a, b: np.minimum(a, b), sympy.Min, (WIDE, WIDE), separate=0.05,
         exact=True, nan_partials=False),
    Case("clip", lambda x, lo, hi: np.clip(x, lo, hi),
         lambda x, lo, hi: sympy.Min(sympy.Max(x, lo), hi),
         (((-2.0, -1.3), (-0.7, 0.7), (1.3, 2.0)), ((-1.2, -0.8),), ((0.8, 1.2),)),
         exact=True, nan_partials=False),
    Case("where", lambda c, a, b: np.where(c > 0, a, b),
         lambda c, a, b: sympy.Piecewise((a, c > 0), (b, True)), (NONZERO, WIDE, WIDE),
         exact=True),
    # rounding (away from the steps)
    Case("floor", lambda a: np.floor(a), sympy.floor, (((-2.9, -2.1), (0.1, 0.9)),), kind="zero"),
    Case("ceil", lambda a: np.ceil(a), sympy.ceiling, (((-2.9, -2.1), (0.1, 0.9)),), kind="zero"),
    Case("trunc", lambda a: np.trunc(a), lambda a: sympy.sign(a) * sympy.floor(sympy.Abs(a)),
         (((-2.9, -2.1), (0.1, 0.9)),), kind="zero"),
    Case("rint", lambda a: np.rint(a), lambda a: sympy.floor(a + sympy.Rational(1, 2)),
         (((-2.4, -1.6), (0.1, 0.4)),), kind="zero"),
    Case("fmod", lambda a, b: np.fmod(a, b), lambda a, b: a - 2 * b * sympy.sign(a),
         (((-2.35, -2.25), (2.25, 2.35)), ((0.8, 0.85),))),     # |a / b| in (2, 3)
    # comparisons
    Case("lt", lambda a, b: np.less(a, b), lambda a, b: _indicator(a < b), (GRID, GRID), "zero",
         exact=True),
    Case("le", lambda a, b: np.less_equal(a, b), lambda a, b: _indicator(a <= b),
         (GRID, GRID), "zero", exact=True),
    Case("gt", lambda a, b: np.greater(a, b), lambda a, b: _indicator(a > b),
         (GRID, GRID), "zero", exact=True),
    Case("ge", lambda a, b: np.greater_equal(a, b), lambda a, b: _indicator(a >= b),
         (GRID, GRID), "zero", exact=True),
    Case("eq", lambda a, b: np.equal(a, b), lambda a, b: _indicator(sympy.Eq(a, b)),
         (GRID, GRID), "zero", exact=True),
    Case("ne", lambda a, b: np.not_equal(a, b), lambda a, b: _indicator(sympy.Ne(a, b)),
         (GRID, GRID), "zero", exact=True),
    # the identity that blocks derivatives
    Case("stop", lambda a: bd.stop_gradient(a), lambda a: a, (WIDE,), kind="stop", exact=True),
]
CASE_BY_OP = {c.op: c for c in CASES}
IDS = [c.op for c in CASES]


# -- helpers ------------------------------------------------------------------------------

def sample(case: Case, seed: int = 0, n: int = N_POINTS):
    """``n`` points of ``case``'s domain, one float64 array per argument."""
    rng = np.random.default_rng(seed)
    cols = []
    for dom in case.domain:
        if isinstance(dom, list):
            cols.append(rng.choice(dom, size=4 * n))
            continue
        lo = np.array([a for a, _ in dom])
        hi = np.array([b for _, b in dom])
        k = rng.integers(len(dom), size=4 * n)
        cols.append(lo[k] + (hi[k] - lo[k]) * rng.random(4 * n))
    keep = np.ones(4 * n, dtype=bool)
    if case.separate:
        keep = np.abs(cols[0] - cols[1]) > case.separate
    return [c[keep][:n] for c in cols]


SYMS = sympy.symbols("a0:3", real=True)


def _no_delta(expr):
    """Drop DiracDelta terms: every point we evaluate at is away from the kinks."""
    return expr.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)


def sym_eval(expr, syms, xs):
    """``expr`` at the points ``xs`` (float64), broadcast to one value per point."""
    fn = sympy.lambdify(syms, _no_delta(expr), modules=["scipy", "numpy"])
    with np.errstate(all="ignore"):
        out = fn(*(np.asarray(x, dtype=np.float64) for x in xs))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), xs[0].shape)


def sym_derivatives(case: Case):
    """SymPy value, gradient list, and Hessian (list of lists) of ``case``."""
    syms = SYMS[:case.arity]
    expr = case.sym(*syms)
    grad = [sympy.diff(expr, s) for s in syms]
    hess = [[sympy.diff(g, s) for s in syms] for g in grad]
    return syms, expr, grad, hess


def central_differences(fn, xs, h=1e-5):
    """Partials of the plain NumPy function ``fn`` by central differences, float64."""
    out = []
    for k in range(len(xs)):
        up = [x.copy() for x in xs]
        dn = [x.copy() for x in xs]
        up[k] += h
        dn[k] -= h
        out.append((np.asarray(fn(*up), float) - np.asarray(fn(*dn), float)) / (2 * h))
    return out


def close(actual, expected, rtol, what):
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * (1.0 + np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=rtol, atol=atol, err_msg=what)


# ops computed by the C library's function (spelled as calls of Python's math module)
C_LIBRARY = tuple(name for name, op in OPS.items() if "math." in op.py)
TOL = {np.float64: 1e-9, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]


# -- completeness of the op table ---------------------------------------------------------

def _fields(fmt):
    return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_entry_is_complete(name):
    op = OPS[name]
    assert name in CASE_BY_OP, f"op {name!r} has no row in tests/test_ops.py CASES"
    assert op.name == name
    assert op.arity in (1, 2, 3)
    assert callable(op.value), f"{name}: no value rule"
    assert callable(op.partials), f"{name}: no partials"
    numbered = {str(k) for k in range(op.arity)}
    assert _fields(op.py) - {"T"} == numbered, (
        f"{name}: py spelling {op.py!r} vs arity {op.arity}")
    assert _fields(op.c) - {"f", "T"} == numbered, (
        f"{name}: c spelling {op.c!r} vs arity {op.arity}")
    args = [f"x{k}" for k in range(op.arity)]
    assert op.py.format(*args, T="np.float32")
    assert op.c.format(*args, f="f", T="float")
    for spelled in (op.py, op.c):       # a C typo shows only where nvcc runs
        depth = 0
        for ch in spelled:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            assert depth >= 0, f"{name}: unbalanced parentheses in {spelled!r}"
        assert depth == 0, f"{name}: unbalanced parentheses in {spelled!r}"

    g = Graph()
    xs = [Var(g, g.input()) for _ in range(op.arity)]
    y = Var(g, g.add(name, tuple(x.id for x in xs)))
    partials = op.partials(*xs, y)
    assert len(partials) == op.arity, f"{name}: {len(partials)} partials for arity {op.arity}"
    if CASE_BY_OP[name].kind in ("zero", "stop"):
        assert all(p is None for p in partials), f"{name} must have only None partials"
    elif name == "where":
        assert partials[0] is None and all(p is not None for p in partials[1:])
    else:
        assert all(p is not None for p in partials), f"{name}: a missing partial"
    if op.commutative:
        assert op.arity == 2
    _check_code_generation_fields(op)


# a comparison of two different arguments in a spelling, as ``{0} > {1}``
_ARGUMENTS_COMPARED = re.compile(r"\{(\d)\} (?:<|<=|>|>=|==|!=) \{(?!\1)\d\}")


def _stub_njit(**options):
    return lambda f: f


def _run_source(source):
    """The names a generated Numba source defines, run as plain Python (``njit`` a no-op)."""
    scope = {"np": np, "math": math, "njit": _stub_njit, "_opts": {}, "_inline": {}}
    exec(source, scope)
    return scope


def _check_code_generation_fields(op):
    """The fields the code generators read agree with the op's spellings, its value rule
    and the modules that read them."""
    name = op.name
    # a conditional expression is printed as the body of a helper function ``_{name}``
    assert op.branches == (" if " in op.py), f"{name}: branches vs py spelling {op.py!r}"
    if op.branches:
        for dtype in DTYPES:
            (source,) = branching_helpers([name], dtype)
            helper = _run_source(source)[f"_{name}"]
            xs = special_grid(op.arity, dtype)
            with np.errstate(all="ignore"):
                got = np.array([helper(*point) for point in zip(*xs)], dtype=dtype)
                want = np.asarray(op.value(*xs), dtype=dtype)
            assert_same_bits(got, want, f"{name}: helper function")
    # the comparisons are valued 1.0 or 0.0 and compare their two arguments
    assert (name in COMPARISONS) == op.comparison
    if op.comparison:
        assert op.arity == 2 and CASE_BY_OP[name].kind == "zero", name
    # compares: the spellings compare two of its arguments (a constant one is hidden)
    for spelled in (op.py, op.c.replace("(", "").replace(")", "")):
        assert op.compares == bool(_ARGUMENTS_COMPARED.search(spelled)), (
            f"{name}: compares vs spelling {spelled!r}")
    if op.comparison:
        assert op.compares, name
    if op.replay_rank is not None:
        ranks = [other.replay_rank for other in OPS.values()]
        assert ranks.count(op.replay_rank) == 1, f"{name}: replay_rank {op.replay_rank} twice"
    # vector: vector_math defines the function for both dtypes, and it computes the op
    assert isinstance(op.compile_weight, int) and op.compile_weight >= 1, name
    if op.vector is None:
        assert op.reduced_range is None, f"{name}: reduced_range without a vector function"
        return
    assert op.arity == 1 and op.compile_weight > 1, f"{name}: an inlined function's weight"
    for dtype in DTYPES:
        function = vector_math.function(op, dtype)
        source = "".join(vector_math.vector_math([name], dtype))
        assert f"def {function}(" in source, f"{name}: vector_math has no {function}"
        scope = _run_source(source)
        x = np.linspace(-3.0, 3.0, 25).astype(dtype)
        got = np.array([scope[function](v) for v in x], dtype=dtype)
        np.testing.assert_allclose(got, op.value(x), rtol=4 * np.finfo(dtype).eps,
                                   atol=4 * np.finfo(dtype).eps, err_msg=function)
        if op.reduced_range:        # the bound the tiled kernel checks, defined with it
            assert op.reduced_range in scope, f"{name}: no {op.reduced_range} in its source"
            assert 0 < scope[op.reduced_range] < np.inf, name


def test_table_rows_name_real_ops():
    assert sorted(CASE_BY_OP) == sorted(OPS), "CASES and ops.OPS disagree"
    assert len(CASE_BY_OP) == len(CASES), "an op has two rows"
    for case in CASES:
        assert case.arity == OPS[case.op].arity, case.op


def _ops_of(tape):
    return {ins.op for ins in tape.instrs}


def test_every_op_reachable_from_numpy():
    reached = set()
    for ufunc in {**UFUNCS, **scipy_ufuncs()}:
        tape, _, _ = trace(lambda *a, u=ufunc: u(*a), [()] * ufunc.nin)
        reached |= _ops_of(tape)
    for fn in (np.where, np.clip):
        tape, _, _ = trace(fn, [(), (), ()])
        reached |= _ops_of(tape)
    missing = set(OPS) - {"stop"} - reached
    assert not missing, f"ops no NumPy ufunc, np.where or np.clip reaches: {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_row_uses_its_op(case):
    tape, shape, _ = trace(case.fn, [()] * case.arity)
    assert shape == ()
    assert case.op in _ops_of(tape), f"{case.op}: its row's function traces to\n{tape}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_rule_matches_sympy(case):
    """The op's own NumPy value rule (used by the interpreter and constant folding)."""
    xs = sample(case, seed=1)
    syms, expr, _, _ = sym_derivatives(case)
    expected = sym_eval(expr, syms, xs)
    args = xs
    if case.op == "where":        # the op's condition is the comparison's 0/1 value
        args = [(xs[0] > 0).astype(float), xs[1], xs[2]]
    with np.errstate(all="ignore"):
        got = OPS[case.op].value(*args)
    close(got, expected, 1e-12, f"{case.op}: value rule")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_py_spelling_matches_value_rule(case, dtype):
    """The Python/Numba spelling, run as plain Python on scalars, agrees with the value rule."""
    op = OPS[case.op]
    xs = [x.astype(dtype) for x in sample(case, seed=7, n=8)]
    if case.op == "where":
        xs[0] = (xs[0] > 0).astype(dtype)
    names = [f"x{k}" for k in range(case.arity)]
    code = compile(op.py.format(*names, T=f"np.{np.dtype(dtype).name}"), op.py, "eval")
    for i in range(len(xs[0])):
        point = [x[i] for x in xs]                       # NumPy scalars of ``dtype``
        with np.errstate(all="ignore"):
            got = eval(code, {"np": np, "math": math}, dict(zip(names, point)))
            want = op.value(*point)
        assert np.asarray(got).dtype == dtype, f"{case.op}: py spelling widens {dtype}"
        # Python's math.lgamma is its own, not the C library's the kernels call: near its
        # zeros at 1 and 2 it is right in absolute terms only
        atol = 8 * np.finfo(dtype).eps if case.op == "lgamma" else 0.0
        np.testing.assert_allclose(float(got), float(want), rtol=4 * np.finfo(dtype).eps,
                                   atol=atol, err_msg=f"{case.op} at {point}")


# -- values and derivatives through the public API ----------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value(case, dtype):
    xs64 = sample(case, seed=2)
    xs = [x.astype(dtype) for x in xs64]
    syms, expr, _, _ = sym_derivatives(case)
    expected = sym_eval(expr, syms, xs)
    argnums = tuple(range(case.arity))
    tangents = [np.ones_like(x) for x in xs]
    value, tangent = bd.jvp(case.fn, argnums=argnums, backend=BACKEND)(*xs, *tangents)
    assert value.dtype == dtype and tangent.dtype == dtype
    assert value.shape == (N_POINTS,)
    close(value, expected, TOL[dtype], f"{case.op}: jvp value")
    # the same ufunc in the same dtype: the interpreter must not widen float32 arithmetic
    with np.errstate(all="ignore"):
        direct = np.asarray(case.fn(*xs)).astype(dtype)
    if case.op in C_LIBRARY:        # the C library's function, not SciPy's: a few ulp apart
        np.testing.assert_allclose(value, direct, rtol=8 * np.finfo(dtype).eps,
                                   atol=8 * np.finfo(dtype).eps, err_msg=f"{case.op}: value")
    else:
        np.testing.assert_array_equal(value, direct, err_msg=f"{case.op}: value vs NumPy")
    value2, _ = bd.value_and_grad(case.fn, argnums=argnums, backend=BACKEND)(*xs)
    assert value2.dtype == dtype
    close(value2, expected, TOL[dtype], f"{case.op}: value_and_grad value")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_first_partials(case, dtype):
    xs64 = sample(case, seed=3)
    xs = [x.astype(dtype) for x in xs64]
    syms, _, grad, _ = sym_derivatives(case)
    argnums = tuple(range(case.arity))
    got = bd.grad(case.fn, argnums=argnums, backend=BACKEND)(*xs)
    assert len(got) == case.arity
    for k, g in enumerate(got):
        assert g.dtype == dtype and g.shape == (N_POINTS,)
        if case.kind in ("zero", "stop"):
            np.testing.assert_array_equal(g, 0.0, err_msg=f"{case.op}: d/d arg {k}")
        else:
            close(g, sym_eval(grad[k], syms, xs), TOL[dtype], f"{case.op}: d/d arg {k} vs SymPy")
    if case.kind == "smooth" and dtype == np.float64:
        fd = central_differences(case.fn, [x.copy() for x in xs64])
        for k, g in enumerate(got):
            close(g, fd[k], 1e-5, f"{case.op}: d/d arg {k} vs finite differences")

    # the JVP with one-hot tangents gives the same columns, forward mode
    for k in range(case.arity):
        tangents = [np.full_like(x, 1.0 if j == k else 0.0) for j, x in enumerate(xs)]
        _, t = bd.jvp(case.fn, argnums=argnums, backend=BACKEND)(*xs, *tangents)
        close(t, got[k], TOL[dtype], f"{case.op}: jvp column {k} vs grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacobian_vjp_hvp(case, dtype):
    """The other transforms give the same partials: jacobian (both modes), vjp, hvp."""
    xs = [x.astype(dtype) for x in sample(case, seed=6)]
    syms, expr, grad, hess = sym_derivatives(case)
    zero = case.kind in ("zero", "stop")
    expected_grad = [np.zeros(N_POINTS) if zero else sym_eval(g, syms, xs) for g in grad]
    expected_hess = [[np.zeros(N_POINTS) if zero else sym_eval(h, syms, xs) for h in row]
                     for row in hess]
    argnums = tuple(range(case.arity))
    rtol = TOL[dtype]
    for mode in ("forward", "reverse"):
        jac = bd.jacobian(case.fn, argnums=argnums, backend=BACKEND, mode=mode)(*xs)
        for k in range(case.arity):
            assert jac[k].dtype == dtype
            close(jac[k], expected_grad[k], rtol, f"{case.op}: jacobian ({mode}) arg {k}")
    u = np.linspace(-1.0, 2.0, N_POINTS).astype(dtype)
    value, ubar = bd.vjp(case.fn, argnums=argnums, backend=BACKEND)(*xs, u)
    close(value, sym_eval(expr, syms, xs), rtol, f"{case.op}: vjp value")
    for k in range(case.arity):
        assert ubar[k].dtype == dtype
        close(ubar[k], u * expected_grad[k], rtol, f"{case.op}: vjp arg {k}")
    vs = [np.cos(np.arange(N_POINTS) + k).astype(dtype) for k in range(case.arity)]
    hv = bd.hvp(case.fn, argnums=argnums, backend=BACKEND)(*xs, *vs)
    for a in range(case.arity):
        assert hv[a].dtype == dtype
        expected = sum(expected_hess[a][b] * vs[b] for b in range(case.arity))
        close(hv[a], expected, rtol, f"{case.op}: hvp arg {a}")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_second_partials(case, dtype, mode):
    xs64 = sample(case, seed=4)
    xs = [x.astype(dtype) for x in xs64]
    syms, _, _, hess = sym_derivatives(case)
    argnums = tuple(range(case.arity))
    got = bd.hessian(case.fn, argnums=argnums, backend=BACKEND, mode=mode)(*xs)
    for a in range(case.arity):
        for b in range(case.arity):
            h = got[a][b]
            assert h.dtype == dtype and h.shape == (N_POINTS,)
            what = f"{case.op}: d2/d arg{a} d arg{b} ({mode})"
            if case.kind in ("zero", "stop"):
                np.testing.assert_array_equal(h, 0.0, err_msg=what)
            else:
                close(h, sym_eval(hess[a][b], syms, xs), TOL[dtype], what)


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "smooth"], ids=lambda c: c.op)
def test_second_partials_match_differences_of_gradient(case):
    """Hessian columns against central differences of batchdiff's own gradient."""
    xs = sample(case, seed=5)
    argnums = tuple(range(case.arity))
    grad = bd.grad(case.fn, argnums=argnums, backend=BACKEND)
    hess = bd.hessian(case.fn, argnums=argnums, backend=BACKEND)(*xs)
    for a in range(case.arity):
        fd = central_differences(lambda *x: grad(*x)[a], [x.copy() for x in xs])
        for b in range(case.arity):
            close(hess[a][b], fd[b], 1e-5, f"{case.op}: d2/d arg{a} d arg{b} vs FD of grad")


def test_stop_gradient_passes_value_blocks_derivative():
    x = np.linspace(-2.0, 2.0, 9)
    f = lambda a: a * bd.stop_gradient(a)          # noqa: E731
    value, g = bd.value_and_grad(f, backend=BACKEND)(x)
    np.testing.assert_array_equal(value, x * x)
    np.testing.assert_array_equal(g, x)             # only the unstopped factor
    h = bd.hessian(f, backend=BACKEND)(x)
    np.testing.assert_array_equal(h, 0.0)


def test_comparison_derivatives_are_zero_in_where():
    """A comparison feeding np.where contributes nothing; the branches do."""
    x = np.array([-1.5, -0.5, 0.5, 1.5])
    f = lambda a: np.where(a > 0, a ** 3, -a)       # noqa: E731
    g = bd.grad(f, backend=BACKEND)(x)
    np.testing.assert_allclose(g, np.where(x > 0, 3 * x ** 2, -1.0))
    h = bd.hessian(f, backend=BACKEND)(x)
    np.testing.assert_allclose(h, np.where(x > 0, 6 * x, 0.0))


# -- NaN and inf propagate, without warnings or errors ------------------------------------

def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sqrt_of_negative_is_nan(dtype):
    x = np.array([-1.0, 4.0], dtype=dtype)
    value, g = _quiet(lambda: bd.value_and_grad(np.sqrt, backend=BACKEND)(x))
    assert value.dtype == dtype
    assert np.isnan(value[0]) and np.isnan(g[0])
    np.testing.assert_allclose([value[1], g[1]], [2.0, 0.25])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_of_zero_is_minus_inf_with_inf_derivative(dtype):
    x = np.array([0.0, 1.0], dtype=dtype)
    value, g = _quiet(lambda: bd.value_and_grad(np.log, backend=BACKEND)(x))
    assert value[0] == -np.inf and g[0] == np.inf
    np.testing.assert_allclose([value[1], g[1]], [0.0, 1.0])
    h = _quiet(lambda: bd.hessian(np.log, backend=BACKEND)(x))
    assert h[0] == -np.inf and h[1] == -1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reciprocal_of_zero_is_inf(dtype):
    x = np.array([0.0, 2.0], dtype=dtype)
    value, g = _quiet(lambda: bd.value_and_grad(lambda a: 1.0 / a, backend=BACKEND)(x))
    assert value[0] == np.inf and g[0] == -np.inf
    np.testing.assert_allclose([value[1], g[1]], [0.5, -0.25])


def test_nan_input_propagates_through_every_smooth_op():
    for case in CASES:
        if case.kind != "smooth" or case.op == "where":
            continue
        xs = [np.array([np.nan]) for _ in range(case.arity)]
        argnums = tuple(range(case.arity))
        value, g = _quiet(lambda: bd.value_and_grad(case.fn, argnums=argnums,
                                                     backend=BACKEND)(*xs))
        assert np.isnan(value[0]), case.op
        if case.nan_partials:
            assert any(np.isnan(gk[0]) for gk in g), case.op


def test_pow_derivative_in_exponent_at_zero_base():
    """d/db 0**b = 0 for b > 0 (0**b is identically 0 there), not NaN."""
    a, b = np.array([0.0, 0.0]), np.array([2.0, 0.5])
    da, db = bd.grad(lambda a, b: a ** b, argnums=(0, 1), backend=BACKEND)(a, b)
    np.testing.assert_array_equal(db, [0.0, 0.0])
    np.testing.assert_array_equal(da, [0.0, np.inf])


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_pow_second_derivative_in_exponent_at_zero_base(mode):
    """0**b is 0 for every b > 0, so every derivative in b is 0 there, the second too."""
    a, b = np.array([0.0, 0.0]), np.array([2.0, 3.0])
    h = bd.hessian(lambda a, b: a ** b, argnums=(0, 1), backend=BACKEND, mode=mode)(a, b)
    np.testing.assert_array_equal(h[1][1], [0.0, 0.0], err_msg="d2/db2 at a = 0")
    np.testing.assert_array_equal(h[0][1], [0.0, 0.0], err_msg="d2/da db at a = 0")


def test_overflow_gives_inf():
    x = np.array([1000.0])
    value, g = _quiet(lambda: bd.value_and_grad(np.exp, backend=BACKEND)(x))
    assert value[0] == np.inf and g[0] == np.inf


# -- special values: every spelling gives the value rule's bits ---------------------------
# Signed zeros, infinities and NaN, in every combination, for the ops whose result IEEE
# arithmetic fixes exactly (no math library rounds them): the Python/Numba and C spellings
# and the Numba executors must give NumPy's bits, the sign of a zero and NaN included.

SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan]
EXACT = [case.op for case in CASES if case.exact]


def special_grid(arity, dtype):
    """Every combination of ``SPECIAL`` values: one array per argument."""
    points = np.array(list(itertools.product(SPECIAL, repeat=arity)), dtype=dtype)
    return [points[:, k].copy() for k in range(arity)]


def assert_same_bits(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    same = ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got)
                                                                       & np.isnan(want))
    bad = np.flatnonzero(~same)
    assert not bad.size, f"{what}: got {got.ravel()[bad][:6]}, want {want.ravel()[bad][:6]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", EXACT)
def test_py_spelling_gives_the_value_rules_bits(name, dtype):
    op = OPS[name]
    xs = special_grid(op.arity, dtype)
    names = [f"x{k}" for k in range(op.arity)]
    code = compile(op.py.format(*names, T=f"np.{np.dtype(dtype).name}"), op.py, "eval")
    with np.errstate(all="ignore"):
        want = np.asarray(op.value(*xs), dtype=dtype)
        got = np.array([eval(code, {"np": np}, dict(zip(names, point)))
                        for point in zip(*xs)], dtype=dtype)
    assert_same_bits(got, want, f"{name} py spelling")


def test_max_min_clip_value_rules_are_numpys():
    """max and min are np.maximum and np.minimum; clip is np.clip with scalar bounds
    (NumPy's loop for array bounds returns the bound, not x, at a signed-zero tie)."""
    a, b = special_grid(2, np.float64)
    assert_same_bits(OPS["max"].value(a, b), np.maximum(a, b), "max")
    assert_same_bits(OPS["min"].value(a, b), np.minimum(a, b), "min")
    x = np.array(SPECIAL * 3)
    for lo, hi in itertools.product(SPECIAL, repeat=2):
        assert_same_bits(OPS["clip"].value(x, lo, hi), np.clip(x, lo, hi), f"clip {lo} {hi}")


C_EXACT = """#include <math.h>
extern "C" void {name}_{T}(const {T}* a, const {T}* b, const {T}* c, {T}* out, long n)
{{
    for (long i = 0; i < n; i++) {{
        const {T} x0 = a[i], x1 = b[i], x2 = c[i];
        (void)x0; (void)x1; (void)x2;
        out[i] = {spelled};
    }}
}}
"""


def test_c_spelling_gives_the_value_rules_bits(tmp_path):
    """The CUDA C spellings built as host C++: NumPy's bits at ±0 ties and NaN (C's
    fmax/fmin would pick either zero and drop NaN)."""
    import ctypes
    import shutil
    import subprocess
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    types = {"double": np.float64, "float": np.float32}
    source = "".join(C_EXACT.format(name=name, T=T, spelled=OPS[name].c.format(
        *[f"x{k}" for k in range(OPS[name].arity)], T=T, f="f" if T == "float" else ""))
        for name in EXACT for T in types)
    (tmp_path / "exact.cpp").write_text(source)
    done = subprocess.run([gxx, "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-Werror",
                           str(tmp_path / "exact.cpp"), "-o", str(tmp_path / "exact.so")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    lib = ctypes.CDLL(str(tmp_path / "exact.so"))
    for name in EXACT:
        op = OPS[name]
        for T, dtype in types.items():
            xs = special_grid(3, dtype)
            out = np.empty_like(xs[0])
            getattr(lib, f"{name}_{T}")(*(ctypes.c_void_p(x.ctypes.data) for x in xs + [out]),
                                        ctypes.c_long(out.size))
            with np.errstate(all="ignore"):
                want = np.asarray(op.value(*xs[:op.arity]), dtype=dtype)
            assert_same_bits(out, want, f"{name} c spelling, {T}")


def _special_ops(v):
    """Ops at special values through NumPy's interface, constant exponents included."""
    a, b, c = v[0], v[1], v[2]
    return np.stack([np.maximum(a, b), np.minimum(a, b), np.clip(a, b, c), np.clip(a, -1.0, 1.0),
                     np.max(v), np.min(v), np.abs(a), np.sign(a), np.where(a > b, a, b),
                     1.0 / np.minimum(a, -a), 1.0 / np.maximum(a, -a),
                     a ** np.inf, a ** -np.inf, a ** np.nan])


@pytest.mark.parametrize("method", ["replay", "compiled"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_numba_executors_give_the_references_bits(method, dtype):
    """Values and J·V at every combination of special values: the reference's bits.

    Numba's own scalar np.maximum/np.minimum return the other zero at a ±0 tie (1/min(0,
    -0) came out +inf), and a constant exponent of ±inf or NaN crashed the compiled printer.
    """
    xs = np.stack(special_grid(3, dtype), axis=1)
    vs = np.ones_like(xs)
    want = _quiet(lambda: bd.jvp(_special_ops, backend="numpy")(xs, vs))
    got = bd.jvp(_special_ops, backend="numba", method=method)(xs, vs)
    for k, part in enumerate(("value", "J·V")):
        assert_same_bits(got[k], want[k], f"{method} {part}")
    plus_zero = (xs[:, 0] == 0) & ~np.signbit(xs[:, 0])      # 1 / np.minimum(0.0, -0.0)
    assert (want[0][plus_zero, 9] == -np.inf).all() and plus_zero.any()
