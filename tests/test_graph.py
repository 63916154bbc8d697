"""The tape: hash-consing, simplification, dead code, printing, and AD structure."""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff import ad
from batchdiff.graph import Graph, Var, replay
from batchdiff.interpreter import evaluate
from batchdiff.simplify import simplify, strip_stops
from batchdiff.tracer import trace


def _vars(n):
    g = Graph()
    return g, [Var(g, g.input()) for _ in range(n)]


def test_hash_consing_shares_equal_nodes():
    g, (x, y) = _vars(2)
    a = (x * y).id
    assert (x * y).id == a
    assert (y * x).id == a            # commutative ops are put in canonical order
    assert (x - y).id != (y - x).id   # non-commutative ones are not
    assert (np.float64(2.0) * x).id == (x * 2).id


def test_constants_fold_and_identities_vanish():
    g, (x,) = _vars(1)
    assert (x * 0).id == g.const(0.0)
    assert (x * 1.0).id == x.id
    assert (x + 0).id == x.id
    assert (0 - x).id == (-x).id
    assert (-(-x)).id == x.id
    assert (x ** 1).id == x.id
    assert (x ** 0).id == g.const(1.0)
    assert (x ** 2).id == (x * x).id
    two = Var(g, g.const(2.0))
    assert g.const_value((two * 3.0 + 1.0).id) == 7.0
    # folding uses the op's own value rule, so IEEE specials come out as NumPy's
    assert np.isnan(g.const_value(apply_const(g, "log", -1.0)))
    # -0.0 and 0.0 are different constants (1/x tells them apart)
    assert g.const(-0.0) != g.const(0.0)


def apply_const(g, op, value):
    return g.add(op, (g.const(value),))


def test_finish_drops_dead_code_but_keeps_inputs():
    g, (x, y, z) = _vars(3)
    unused = x * y
    out = x + 1.0
    tape = g.finish([out.id])
    assert tape.n_inputs == 3
    assert [ins.op for ins in tape.instrs] == ["input", "input", "input", "const", "add"]
    assert unused.id < len(g.instrs)


def test_tape_prints_the_scalar_program():
    tape, shape, _ = trace(lambda v: np.sin(v[0]) * v[1] + 2.0, [(2,)])
    assert shape == ()
    assert str(tape) == "\n".join([
        "tape: 2 inputs, 3 ops, 1 outputs",
        "  %0 = input 0",
        "  %1 = input 1",
        "  %2 = sin(%0)",
        "  %3 = mul(%1, %2)",   # commutative arguments in node order
        "  %4 = const 2.0",
        "  %5 = add(%3, %4)",
        "  out[0] = %5",
    ])


def test_tracing_is_deterministic():
    f = lambda v: np.sum(np.tanh(v) * v[::-1]) + v[0] * v[2]  # noqa: E731
    assert str(bd.hessian(f).tape(np.ones((1, 3)))) == str(bd.hessian(f).tape(np.ones((1, 3))))


def test_tape_hash_is_computed_once_and_agrees_with_equality():
    f = lambda v: np.sin(v[0]) * v[1] + v[2] ** 2  # noqa: E731
    x = np.ones((1, 3))
    a, b = bd.hessian(f).tape(x), bd.hessian(f).tape(x)
    assert a is not b and a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert "_hash" in vars(a)       # kept: the kernel tables look a tape up on every call
    assert hash(bd.grad(f).tape(x)) != hash(a)


def test_common_subexpressions_are_shared():
    tape, _, _ = trace(lambda v: np.sin(v[0] * v[1]) + np.cos(v[1] * v[0]) * (v[0] * v[1]), [(2,)])
    assert sum(ins.op == "mul" for ins in tape.instrs) == 2   # x*y once, times cos once


def test_structural_zeros_vanish_from_derivatives():
    # the Hessian of a sum of squares is the constant 2I: no op survives
    h = bd.hessian(lambda v: np.sum(v ** 2)).tape(np.ones((1, 5)))
    assert h.num_ops == 0
    # Lorenz-96 has 4 non-zeros per row; its Jacobian tape does not compute the others
    def l96(x):
        return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + 8.0
    j = bd.jacobian(l96).tape(np.ones((1, 10)))
    assert j.num_ops <= 3 * 10
    assert sum(g_is_zero(j, o) for o in j.outputs) == 100 - 4 * 10


def g_is_zero(tape, o):
    ins = tape.instrs[o]
    return ins.op == "const" and ins.value == 0.0


def test_hessian_computes_upper_triangle_only():
    tape, shape, _ = trace(lambda v: np.prod(v), [(4,)])
    h, index = ad.hessian_tape(tape, list(range(4)), "reverse")
    assert len(h.outputs) == 4 * 5 // 2
    assert sorted(index) == [(0, a, b) for a in range(4) for b in range(a, 4)]


@pytest.mark.parametrize("kind", ["jacobian", "hessian"])
def test_auto_mode_keeps_the_smaller_tape(kind):
    f = (lambda v: np.stack([np.sum(v ** 3), v[0] * v[1]])) if kind == "jacobian" else \
        (lambda v: np.sum(np.sin(v) * v[0]))
    make = getattr(bd, kind)
    x = np.ones((1, 6))
    sizes = {m: make(f, mode=m).tape(x).num_ops for m in ("forward", "reverse")}
    assert make(f).tape(x).num_ops == min(sizes.values())


def test_simplify_and_replay_preserve_values():
    f = lambda v: np.sum(np.exp(v) * v[::-1]) / (1 + v[0] ** 2)  # noqa: E731
    tape = bd.hessian(f).tape(np.ones((1, 3)))
    x = np.random.default_rng(0).random((7, 3))
    ref = evaluate(tape, [x], 7, np.float64)
    np.testing.assert_array_equal(evaluate(simplify(tape), [x], 7, np.float64), ref)
    g = Graph()
    ins = [g.input() for _ in range(3)]
    vals = replay(g, tape, ins)
    again = g.finish([vals[o] for o in tape.outputs])
    assert str(again) == str(tape)


def test_replay_with_constant_inputs_specialises():
    tape, _, _ = trace(lambda v: v[0] * v[1] + np.sin(v[1]), [(2,)])
    g = Graph()
    vals = replay(g, tape, [g.input(), g.const(0.0)])
    special = g.finish([vals[o] for o in tape.outputs])
    assert special.num_ops == 0   # x*0 + sin(0) folds to the constant 0


def test_stop_gradient_is_kept_for_ad_and_stripped_for_execution():
    f = lambda v: np.sum(bd.stop_gradient(v * v) * v)  # noqa: E731
    tape, _, _ = trace(f, [(2,)])
    assert any(ins.op == "stop" for ins in tape.instrs)
    stripped = strip_stops(tape)
    assert not any(ins.op == "stop" for ins in stripped.instrs)
    x = np.array([[1.5, -2.0]])
    np.testing.assert_array_equal(evaluate(stripped, [x], 1, np.float64),
                                  [[1.5 ** 3 - 8.0]])


def test_interpreter_chunks_agree_with_one_chunk():
    tape = bd.hessian(lambda v: np.sum(np.sin(v) * v[0])).tape(np.ones((1, 3)))
    x = np.random.default_rng(1).random((1000, 3))
    whole = evaluate(tape, [x], 1000, np.float64, chunk=4096)
    np.testing.assert_array_equal(evaluate(tape, [x], 1000, np.float64, chunk=37), whole)


def test_interpreter_shared_blocks_broadcast():
    tape, _, _ = trace(lambda x, w: np.sum(w * x), [(3,), (3,)])
    x = np.random.default_rng(2).random((5, 3))
    w = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(evaluate(tape, [x, w], 5, np.float64)[:, 0], x @ w[0])
