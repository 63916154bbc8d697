"""Property-based tests: random expression trees against SymPy.

A hypothesis strategy draws expression trees over three variables (depth <= 4) from
ops that are smooth everywhere on the reals. Each tree is turned into both a SymPy
expression (the oracle: its derivatives are taken symbolically) and a Python function
of a traced point ``v`` (what a user writes). Every transform of the public API is
checked against SymPy at a few random points, forward and reverse modes against each
other, the reference interpreter against itself point by point, and simplification
against the unsimplified tape.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import batchdiff as bd
from batchdiff import ad
from batchdiff.graph import Instr, Tape
from batchdiff.interpreter import evaluate
from batchdiff.simplify import simplify
from batchdiff.tracer import trace

N_VARS = 3
N_POINTS = 4
BACKEND = "numpy"
X = sympy.symbols(f"x0:{N_VARS}", real=True)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- expression trees ---------------------------------------------------------------------
# A tree is a nested tuple: ("var", i), ("const", c), (unary, e), (binary, l, r),
# ("pow", e, k). Tuples print readably when hypothesis reports a failing example.

CONSTS = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0]
UNARY = ["neg", "sin", "cos", "tanh", "atan", "exp_tanh", "log_1sq", "sqrt_1sq"]
BINARY = ["add", "sub", "mul", "div_1sq", "hypot"]
POW_INT = [2, 3, 4]              # e ** k for any e
POW_POS = [-2, -1, 3, 0.5]       # (1 + e**2) ** k
PIECEWISE = ["max", "select", "abs_"]   # only in trees that SymPy does not differentiate

LEAVES = st.one_of(st.integers(0, N_VARS - 1).map(lambda i: ("var", i)),
                   st.sampled_from(CONSTS).map(lambda c: ("const", c)))


def trees(depth: int, piecewise: bool = False, root: bool = True):
    """Trees of height at most ``depth``; the root is an operation, not a leaf."""
    if depth == 0:
        return LEAVES
    sub = trees(depth - 1, piecewise, root=False)
    options = [
        st.tuples(st.sampled_from(UNARY), sub),
        st.tuples(st.sampled_from(BINARY), sub, sub),
        st.tuples(st.just("pow"), sub, st.sampled_from(POW_INT)),
        st.tuples(st.just("pow_1sq"), sub, st.sampled_from(POW_POS)),
    ]
    if piecewise:
        options.append(st.tuples(st.sampled_from(PIECEWISE), sub, sub))
    return st.one_of(*options) if root else st.one_of(LEAVES, *options)


SCALAR_TREES = trees(4)
VECTOR_TREES = st.tuples(trees(4), trees(4))
PIECEWISE_TREES = st.tuples(trees(4, piecewise=True), trees(4, piecewise=True))
SEEDS = st.integers(0, 2 ** 32 - 1)


def to_sympy(t):
    op = t[0]
    if op == "var":
        return X[t[1]]
    if op == "const":
        return sympy.nsimplify(t[1])
    if op == "pow":
        return to_sympy(t[1]) ** t[2]
    if op == "pow_1sq":
        k = sympy.nsimplify(t[2])
        return (1 + to_sympy(t[1]) ** 2) ** k
    args = [to_sympy(a) for a in t[1:]]
    return {
        "neg": lambda e: -e,
        "sin": sympy.sin, "cos": sympy.cos, "tanh": sympy.tanh, "atan": sympy.atan,
        "exp_tanh": lambda e: sympy.exp(sympy.tanh(e)),
        "log_1sq": lambda e: sympy.log(1 + e ** 2),
        "sqrt_1sq": lambda e: sympy.sqrt(1 + e ** 2),
        "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "div_1sq": lambda a, b: a / (1 + b ** 2),
        "hypot": lambda a, b: sympy.sqrt(a ** 2 + b ** 2),
    }[op](*args)


def to_numpy(t, v, record=None):
    """``t`` on a point ``v`` (traced, or a plain (3,) or (3, B) array), NumPy style.

    ``record`` (a list) collects ``(op, value)`` of every node when ``v`` is plain, so
    examples can keep away from hypot's kink and from ill-conditioned magnitudes.
    """
    op = t[0]
    value = _apply_numpy(t, v, record)
    if record is not None:
        record.append((op, value))
    return value


def _apply_numpy(t, v, record):
    op = t[0]
    if op == "var":
        return v[t[1]]
    if op == "const":
        return np.float64(t[1])     # a Python float would raise OverflowError in **
    if op == "pow":
        return to_numpy(t[1], v, record) ** t[2]
    if op == "pow_1sq":
        return (1 + to_numpy(t[1], v, record) ** 2) ** t[2]
    args = [to_numpy(a, v, record) for a in t[1:]]
    return {
        "neg": lambda e: -e,
        "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "atan": np.arctan,
        "exp_tanh": lambda e: np.exp(np.tanh(e)),
        "log_1sq": lambda e: np.log(1 + e ** 2),
        "sqrt_1sq": lambda e: np.sqrt(1 + e ** 2),
        "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "div_1sq": lambda a, b: a / (1 + b ** 2),
        "hypot": np.hypot,
        "max": np.maximum,
        "select": lambda a, b: np.where(a > b, a, b * 0.5),
        "abs_": lambda a, b: np.abs(a - b),
    }[op](*args)


def scalar_fn(t):
    return lambda v: to_numpy(t, v)


def vector_fn(ts):
    return lambda v: np.stack([to_numpy(t, v) for t in ts])


def points(seed, n=N_POINTS, trees_=()):
    """``n`` points in (-1.5, 1.5)^3 where the trees ``trees_`` are well conditioned.

    Every hypot stays away from its kink at 0, and every intermediate value below 100
    in magnitude (``sin(x**64)`` is a fine function, but no float64 oracle agrees on it).
    """
    x = np.random.default_rng(seed).uniform(-1.5, 1.5, size=(n, N_VARS))
    record = []
    with np.errstate(all="ignore"):
        for t in trees_:
            to_numpy(t, x.T, record)
    assume(all(np.all(np.abs(value) < 100.0) for _, value in record))
    assume(all(np.all(np.abs(value) > 0.05) for op, value in record if op == "hypot"))
    return x


def _no_delta(expr):
    """Drop DiracDelta terms (hypot(0, x) is |x|): points() keeps away from the kinks."""
    return expr.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)


def sym_eval(exprs, x):
    """SymPy expressions at the points ``x`` (B, 3): array (B, len(exprs))."""
    # evalf: exact rationals and surds (3**64, sqrt(big integer)) become floats NumPy takes
    fn = sympy.lambdify(X, [_no_delta(e).evalf(30) for e in exprs], modules="numpy")
    cols = fn(*x.T)
    return np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), x.shape[:1])
                     for c in cols], axis=1)


def close(actual, expected, rtol=1e-7, what=""):
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * (1.0 + np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# -- derivatives against SymPy ------------------------------------------------------------

@SETTINGS
@given(SCALAR_TREES, SEEDS)
def test_grad_matches_sympy(t, seed):
    x = points(seed, trees_=[t])
    e = to_sympy(t)
    value, g = bd.value_and_grad(scalar_fn(t), backend=BACKEND)(x)
    close(value, sym_eval([e], x)[:, 0], what="value")
    close(g, sym_eval([sympy.diff(e, s) for s in X], x), what="gradient")
    close(bd.grad(scalar_fn(t), backend=BACKEND)(x), g, rtol=1e-12, what="grad vs value_and_grad")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@SETTINGS
@given(VECTOR_TREES, SEEDS)
def test_jacobian_matches_sympy(mode, ts, seed):
    x = points(seed, trees_=ts)
    jac = sympy.Matrix([to_sympy(t) for t in ts]).jacobian(X)
    got = bd.jacobian(vector_fn(ts), backend=BACKEND, mode=mode)(x)
    assert got.shape == (len(x), 2, N_VARS)
    close(got.reshape(len(x), -1), sym_eval(list(jac), x), what=f"jacobian ({mode})")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@SETTINGS
@given(SCALAR_TREES, SEEDS)
def test_hessian_matches_sympy(mode, t, seed):
    x = points(seed, trees_=[t])
    hess = sympy.hessian(to_sympy(t), X)
    got = bd.hessian(scalar_fn(t), backend=BACKEND, mode=mode)(x)
    assert got.shape == (len(x), N_VARS, N_VARS)
    close(got.reshape(len(x), -1), sym_eval(list(hess), x), what=f"hessian ({mode})")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@settings(SETTINGS, max_examples=12)
@given(VECTOR_TREES, SEEDS)
def test_vector_hessian_matches_sympy(mode, ts, seed):
    x = points(seed, trees_=ts)
    expected = [entry for t in ts for entry in sympy.hessian(to_sympy(t), X)]
    got = bd.hessian(vector_fn(ts), backend=BACKEND, mode=mode)(x)
    assert got.shape == (len(x), 2, N_VARS, N_VARS)
    close(got.reshape(len(x), -1), sym_eval(expected, x), what=f"vector hessian ({mode})")


@SETTINGS
@given(VECTOR_TREES, SEEDS)
def test_jvp_matches_sympy(ts, seed):
    x = points(seed, trees_=ts)
    v = np.random.default_rng(seed + 1).normal(size=x.shape)
    exprs = [to_sympy(t) for t in ts]
    jac = sym_eval(list(sympy.Matrix(exprs).jacobian(X)), x).reshape(len(x), 2, N_VARS)
    y, jv = bd.jvp(vector_fn(ts), backend=BACKEND)(x, v)
    close(y, sym_eval(exprs, x), what="jvp value")
    close(jv, np.einsum("bij,bj->bi", jac, v), what="J v")


@SETTINGS
@given(VECTOR_TREES, SEEDS)
def test_vjp_matches_sympy(ts, seed):
    x = points(seed, trees_=ts)
    u = np.random.default_rng(seed + 2).normal(size=(len(x), 2))
    exprs = [to_sympy(t) for t in ts]
    jac = sym_eval(list(sympy.Matrix(exprs).jacobian(X)), x).reshape(len(x), 2, N_VARS)
    y, uj = bd.vjp(vector_fn(ts), backend=BACKEND)(x, u)
    close(y, sym_eval(exprs, x), what="vjp value")
    close(uj, np.einsum("bi,bij->bj", u, jac), what="u^T J")


@SETTINGS
@given(SCALAR_TREES, SEEDS)
def test_hvp_matches_sympy(t, seed):
    x = points(seed, trees_=[t])
    v = np.random.default_rng(seed + 3).normal(size=x.shape)
    hess = sym_eval(list(sympy.hessian(to_sympy(t), X)), x).reshape(len(x), N_VARS, N_VARS)
    got = bd.hvp(scalar_fn(t), backend=BACKEND)(x, v)
    assert got.shape == x.shape
    close(got, np.einsum("bij,bj->bi", hess, v), what="H v")


# -- the transforms agree with each other ---------------------------------------------------

@SETTINGS
@given(VECTOR_TREES, SEEDS)
def test_forward_and_reverse_agree(ts, seed):
    """<u, J v> is the same from a JVP (forward) and a VJP (reverse)."""
    x = points(seed, trees_=ts)
    rng = np.random.default_rng(seed + 4)
    v, u = rng.normal(size=x.shape), rng.normal(size=(len(x), 2))
    y1, jv = bd.jvp(vector_fn(ts), backend=BACKEND)(x, v)
    y2, uj = bd.vjp(vector_fn(ts), backend=BACKEND)(x, u)
    np.testing.assert_array_equal(y1, y2)
    lhs = np.sum(u * jv, axis=1)
    rhs = np.sum(uj * v, axis=1)
    scale = np.sum(np.abs(u[:, :, None] * np.abs(bd.jacobian(vector_fn(ts), backend=BACKEND)(x))
                          * np.abs(v[:, None, :])), axis=(1, 2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-12 * (1 + np.max(scale)))


@settings(SETTINGS, max_examples=15)
@given(SCALAR_TREES, SEEDS)
def test_hessian_modes_hvp_and_jacobian_of_grad_agree(t, seed):
    x = points(seed, trees_=[t])
    f = scalar_fn(t)
    h_fwd = bd.hessian(f, backend=BACKEND, mode="forward")(x)
    h_rev = bd.hessian(f, backend=BACKEND, mode="reverse")(x)
    jg = bd.jacobian(bd.grad(f), backend=BACKEND)(x)
    close(h_rev, h_fwd, rtol=1e-10, what="hessian reverse vs forward")
    close(jg, h_fwd, rtol=1e-10, what="jacobian(grad) vs hessian")
    np.testing.assert_allclose(h_fwd, np.swapaxes(h_fwd, 1, 2), rtol=0, atol=0)
    v = np.eye(N_VARS)[seed % N_VARS]
    close(bd.hvp(f, backend=BACKEND)(x, v), h_fwd @ v, rtol=1e-10, what="hvp vs hessian column")


# -- the reference interpreter ----------------------------------------------------------------

def _tapes(ts):
    """The traced tape of ``ts`` and its derivative tapes (some with extra inputs)."""
    tape, _, _ = trace(vector_fn(ts), [(N_VARS,)])
    wrt = list(range(N_VARS))
    return [tape,
            ad.jacobian_tape(tape, wrt, "forward"),
            ad.jacobian_tape(tape, wrt, "reverse"),
            ad.hessian_tape(tape, wrt, "reverse")[0],
            ad.jvp_tape(tape, wrt),
            ad.vjp_tape(tape, wrt)]


def _blocks(tape, x, seed):
    """Input blocks: the points, then tangents or cotangents if the tape takes them."""
    extra = tape.n_inputs - N_VARS
    if not extra:
        return [x]
    return [x, np.random.default_rng(seed).normal(size=(len(x), extra))]


@settings(SETTINGS, max_examples=20)
@given(PIECEWISE_TREES, SEEDS)
def test_interpreter_batch_equals_point_by_point(ts, seed):
    x = np.random.default_rng(seed).uniform(-1.5, 1.5, size=(8, N_VARS))
    for tape in _tapes(ts):
        blocks = _blocks(tape, x, seed)
        batch = evaluate(tape, blocks, 8, np.float64)
        assert batch.shape == (8, len(tape.outputs))
        single = np.concatenate([evaluate(tape, [b[i:i + 1] for b in blocks], 1, np.float64)
                                 for i in range(8)])
        np.testing.assert_array_equal(batch, single, err_msg=str(tape))
        chunked = evaluate(tape, blocks, 8, np.float64, chunk=3)
        np.testing.assert_array_equal(batch, chunked, err_msg="chunk=3")
        if len(blocks) > 1:       # a (1, k) block is shared by all points
            shared = evaluate(tape, [x, blocks[1][:1]], 8, np.float64, chunk=3)
            broadcast = evaluate(tape, [x, np.repeat(blocks[1][:1], 8, axis=0)], 8, np.float64)
            np.testing.assert_array_equal(shared, broadcast, err_msg="shared block")


# -- simplification never changes values -------------------------------------------------------

IDENTITIES = [   # (emit, const, x) -> a node equal to x
    lambda e, c, x: e("add", e("mul", x, c(1.0)), c(0.0)),
    lambda e, c, x: e("sub", c(0.0), e("neg", x)),
    lambda e, c, x: e("div", e("sub", x, c(0.0)), c(1.0)),
    lambda e, c, x: e("pow", x, c(1.0)),
    lambda e, c, x: e("where", c(1.0), x, c(0.0)),
    lambda e, c, x: e("neg", e("mul", c(-1.0), x)),
    lambda e, c, x: e("mul", c(2.0), e("mul", c(0.5), x)),
    lambda e, c, x: e("div", e("neg", x), c(-1.0)),
    lambda e, c, x: e("add", x, e("mul", x, c(0.0))),
    lambda e, c, x: e("mul", e("neg", x), e("neg", c(1.0))),
]


def raw_tape(ts) -> Tape:
    """``ts`` as a tape built without hash-consing or rewrites (every identity left in)."""
    instrs = [Instr("input", (), k) for k in range(N_VARS)]

    def emit(op, *args):
        instrs.append(Instr(op, args))
        return len(instrs) - 1

    def const(c):
        instrs.append(Instr("const", (), float(c)))
        return len(instrs) - 1

    def one_plus_square(e):
        return emit("add", const(1.0), emit("pow", e, const(2.0)))

    def build(t):
        op = t[0]
        if op == "var":
            # wrap each variable in an identity for the simplifier to remove (in turn)
            wrap = IDENTITIES[len(instrs) % len(IDENTITIES)]
            return wrap(emit, const, t[1])
        if op == "const":
            return const(t[1])
        if op == "pow":
            return emit("pow", build(t[1]), const(t[2]))
        if op == "pow_1sq":
            return emit("pow", one_plus_square(build(t[1])), const(t[2]))
        args = [build(a) for a in t[1:]]
        simple = {"neg": "neg", "sin": "sin", "cos": "cos", "tanh": "tanh", "atan": "atan",
                  "add": "add", "sub": "sub", "mul": "mul", "hypot": "hypot", "max": "max"}
        if op in simple:
            return emit(simple[op], *args)
        if op == "exp_tanh":
            return emit("exp", emit("tanh", args[0]))
        if op == "log_1sq":
            return emit("log", one_plus_square(args[0]))
        if op == "sqrt_1sq":
            return emit("sqrt", one_plus_square(args[0]))
        if op == "div_1sq":
            return emit("div", args[0], one_plus_square(args[1]))
        if op == "select":
            a, b = args
            return emit("where", emit("gt", a, b), a, emit("mul", b, const(0.5)))
        if op == "abs_":
            return emit("abs", emit("sub", args[0], args[1]))
        raise AssertionError(op)

    outputs = [build(t) for t in ts]
    # a scaled copy, so constant scale factors meet: 2 * (3 * (-out0))
    outputs.append(emit("mul", const(2.0), emit("mul", const(3.0), emit("neg", outputs[0]))))
    return Tape(tuple(instrs), tuple(outputs), N_VARS)


def _same(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * (1 + np.nanmax(np.abs(b),
                                                                              initial=0.0)),
                               equal_nan=True, err_msg=what)


@settings(SETTINGS, max_examples=30)
@given(PIECEWISE_TREES, SEEDS)
def test_simplify_preserves_values(ts, seed):
    x = np.random.default_rng(seed).uniform(-1.5, 1.5, size=(8, N_VARS))
    raw = raw_tape(ts)
    simple = simplify(raw)
    assert simple.n_inputs == raw.n_inputs and len(simple.outputs) == len(raw.outputs)
    assert simple.num_ops <= raw.num_ops
    with np.errstate(all="ignore"):
        expected = np.stack([np.broadcast_to(np.asarray(to_numpy(t, x.T), float), (8,))
                             for t in ts], axis=1)
    raw_out = evaluate(raw, [x], 8, np.float64)
    _same(raw_out[:, :2], expected, "raw tape vs NumPy")
    _same(evaluate(simple, [x], 8, np.float64), raw_out, f"simplify(raw)\n{simple}")
    for tape in _tapes(ts):
        blocks = _blocks(tape, x, seed)
        _same(evaluate(simplify(tape), blocks, 8, np.float64),
              evaluate(tape, blocks, 8, np.float64), f"simplify\n{tape}")


# -- a few fixed edge cases of the tree functions ------------------------------------------------

def test_constant_tree_has_zero_derivatives():
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, N_VARS))
    value, g = bd.value_and_grad(scalar_fn(("const", 1.5)), backend=BACKEND)(x)
    np.testing.assert_array_equal(value, 1.5)
    np.testing.assert_array_equal(g, 0.0)
    np.testing.assert_array_equal(bd.hessian(scalar_fn(("const", 1.5)), backend=BACKEND)(x), 0.0)
    jac = bd.jacobian(vector_fn([("const", 1.0), ("var", 2)]), backend=BACKEND)(x)
    np.testing.assert_array_equal(jac[:, 0], 0.0)
    np.testing.assert_array_equal(jac[:, 1], np.tile([0.0, 0.0, 1.0], (3, 1)))
