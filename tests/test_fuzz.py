"""The fuzzer (batchdiff.fuzz): its oracle, its coverage, a CI budget, and that it can fail.

The CI budget: 400 graphs on the reference interpreter and replay, 8 on one compiled
kernel, float64 and float32. ``python -m batchdiff.fuzz --graphs 100000`` runs the rest.
"""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from mpmath import mp

import batchdiff as bd
from batchdiff import fuzz, ops
from batchdiff.tracer import trace

CI_SEED = 20_000


def _graph(nodes, outputs, points, tangents=None, cotangents=None):
    """A hand-made graph over x0, x1, x2."""
    nodes = tuple([("var", (), i) for i in range(fuzz.N_VARS)] + list(nodes))
    tangents = tangents or tuple((1.0, -0.5, 0.25) for _ in points)
    cotangents = cotangents or tuple(tuple(1.0 for _ in outputs) for _ in points)
    return fuzz.RandomGraph(-1, nodes, tuple(outputs), tuple(points), tangents, cotangents)


# -- the generator and the oracle ---------------------------------------------------------------

def test_rules_reach_every_op():
    """Every primitive op of ops.OPS is made by some rule (a new op needs a rule here)."""
    seen = set()
    for name, rule in fuzz.RULES.items():
        g = _graph([(name, tuple(range(rule.arity)) if rule.arity <= 3 else (0, 1, 2, 0),
                     rule.params[0])], [fuzz.N_VARS], [(0.5, -0.25, 1.0)] * fuzz.N_POINTS)
        tape, _, _ = trace(g.function(), [(fuzz.N_VARS,)])
        seen |= {ins.op for ins in tape.instrs}
    assert set(ops.OPS) <= seen, f"ops no rule reaches: {sorted(set(ops.OPS) - seen)}"


def test_each_rule_numpy_and_mpmath_agree():
    """A rule's NumPy source and its mpmath value are the same function."""
    rng = np.random.default_rng(0)
    for name, rule in fuzz.RULES.items():
        for p in rule.params:
            args = tuple(range(rule.arity)) if rule.arity <= 3 else (0, 1, 2, 1)
            x = tuple(float(v) for v in rng.uniform(-1.5, 1.5, 3))
            g = _graph([(name, args, p)], [fuzz.N_VARS], [x] * fuzz.N_POINTS)
            with np.errstate(all="ignore"):
                value = g.function()(np.array(x))[0]
            with mp.workdps(30):
                exact = rule.mp(p, *(mp.mpf(x[a]) for a in args))
            assert value == pytest.approx(float(exact), rel=1e-13, abs=1e-13), (name, p)


def test_oracle_derivatives_to_float64_precision():
    """f = sin(x0) * x1 + stop(x2**2) * x0: exact first and second derivatives."""
    nodes = [("sin", (0,), None), ("mul", (3, 1), None), ("pow_int", (2,), 2),
             ("stop", (5,), None), ("mul", (6, 0), None), ("add", (4, 7), None)]
    x = (0.75, -1.25, 0.5)
    g = _graph(nodes, [8], [x] * fuzz.N_POINTS)
    t = fuzz.oracle(g, x)
    x0, x1, x2 = x
    assert t.value[0] == pytest.approx(np.sin(x0) * x1 + x2 ** 2 * x0, rel=1e-15)
    np.testing.assert_allclose(t.jac[0], [np.cos(x0) * x1 + x2 ** 2, np.sin(x0), 0.0],
                               rtol=1e-14, atol=1e-15)     # stop: no d/dx2
    np.testing.assert_allclose(t.hess[0], [[-np.sin(x0) * x1, np.cos(x0), 0.0],
                                           [np.cos(x0), 0.0, 0.0], [0.0, 0.0, 0.0]],
                               rtol=1e-12, atol=1e-12)
    assert not t.singular and t.kink == np.inf


def test_oracle_kinks_and_singular_points():
    at_tie = fuzz.oracle(_graph([("maximum", (0, 1), None)], [3], [(0.5, 0.5, 0.0)] * 2),
                         (0.5, 0.5, 0.0))
    assert at_tie.kink == 0.0 and at_tie.kink_rule == "maximum"
    same = fuzz.oracle(_graph([("maximum", (0, 0), None)], [3], [(0.5, 0.5, 0.0)] * 2),
                       (0.5, 0.5, 0.0))
    assert same.kink == np.inf            # max(a, a) has no kink
    pole = fuzz.oracle(_graph([("div_pole", (1, 0), None)], [3], [(0.0, 1.0, 0.0)] * 2),
                       (0.0, 1.0, 0.0))
    assert pole.singular


def test_graphs_depend_on_their_seed_only():
    a, b = fuzz.random_graph(123), fuzz.random_graph(123)
    assert a == b and a.source() == b.source()
    assert fuzz.random_graph(124) != a
    sources = {fuzz.random_graph(s).source() for s in range(200)}
    assert len(sources) > 190
    used = {n[0] for s in range(300) for n in fuzz.random_graph(s).nodes}
    assert set(fuzz.RULES) <= used
    assert any(len(fuzz.random_graph(s).outputs) == 3 for s in range(50))


# -- a CI budget -------------------------------------------------------------------------------

def test_fuzz_reference_and_replay():
    tally = fuzz.check_range(0, 400, seed=CI_SEED, executors=("numpy", "replay"), batch=100)
    problems = [f.reproducer() for f in tally.failures] + [str(e) for e in tally.errors]
    assert not problems, "\n".join(problems[:5])
    for executor in ("numpy", "replay"):
        for dtype in fuzz.DTYPES:
            assert tally.points[executor, dtype, "ordinary"] > 600
            for part in fuzz.PARTS:
                assert tally.entries[executor, dtype, part] > 500, (executor, dtype, part)


def test_fuzz_compiled_kernel():
    tally = fuzz.check_range(0, 8, seed=CI_SEED + 1000, executors=("compiled",),
                             batch=8, compiled_batch=8)
    problems = [f.reproducer() for f in tally.failures] + [str(e) for e in tally.errors]
    assert not problems, "\n".join(problems[:5])
    assert tally.graphs["compiled"] == 8
    assert all(tally.points["compiled", d, "ordinary"] > 10 for d in fuzz.DTYPES)


def test_points_at_kinks_are_reported_apart():
    """(x0 > x1) * x2 jumps where x0 == x1: central differences there mean nothing."""
    g = _graph([("compare", (0, 1, 2), None)], [3], [(0.5, 0.5, 2.0), (0.25, -1.0, 2.0)])
    tally = fuzz.check_batch([g], ("numpy", "replay"))
    assert not tally.failures and not tally.errors
    assert tally.kinks["float64", "compare"] == 1 and tally.kinks["float32", "compare"] == 1
    for dtype in fuzz.DTYPES:
        assert tally.points["replay", dtype, "kink"] == 1
        assert tally.points["replay", dtype, "ordinary"] == 1


# -- the fuzzer can fail -------------------------------------------------------------------------

def _mutated(monkeypatch, name, factor):
    op = ops.OPS[name]

    def partials(*args):
        return tuple(None if p is None else p * factor for p in op.partials(*args))
    monkeypatch.setitem(ops.OPS, name, dataclasses.replace(op, partials=partials))


def test_a_slightly_wrong_rule_is_found_and_reproduced(monkeypatch):
    _mutated(monkeypatch, "tanh", 1.001)
    tally = fuzz.check_range(0, 100, seed=CI_SEED, executors=("numpy", "replay"))
    wrong = [f for f in tally.failures if f.kind == "wrong"]
    assert wrong and all(f.part != "value" for f in wrong)
    assert {f.dtype for f in wrong} == {"float64", "float32"}
    assert {f.part for f in wrong} == set(fuzz.PARTS) - {"value"}
    f = next(f for f in wrong if f.dtype == "float64" and f.part == "jvp")
    assert "np.tanh" in f.graph.source()
    assert fuzz.rerun(f) == pytest.approx(f.got, rel=1e-12)     # standalone, same value
    code = f.reproducer()
    assert "bd.jvp(f, backend='numpy')(X, V)" in code and "expected" in code


def test_a_wrong_second_derivative_is_found(monkeypatch):
    """cos's partial -sin(stop(a)): first derivatives right, second ones wrong."""
    op = ops.OPS["cos"]
    monkeypatch.setitem(ops.OPS, "cos", dataclasses.replace(
        op, partials=lambda a, y: (-ops._call("sin", ops._call("stop", a)),)))
    tally = fuzz.check_range(0, 100, seed=CI_SEED, executors=("numpy",), dtypes=("float64",))
    parts = {f.part for f in tally.failures}
    assert parts == {"hessian_forward", "hessian_reverse", "hvp"}


def test_an_executor_disagreeing_with_the_reference_is_found(monkeypatch):
    """Replay results off by one part in 10^6: an executor failure, not conditioning."""
    from batchdiff import kernels
    real = kernels.execute

    def execute(tape, blocks, batch, outs, name, method, fresh=True):
        real(tape, blocks, batch, outs, name, method, fresh)
        if method == "replay":
            outs[0][:] *= 1 + 1e-6
    monkeypatch.setattr(kernels, "execute", execute)
    tally = fuzz.check_range(0, 50, seed=CI_SEED, executors=("numpy", "replay"),
                             dtypes=("float64",))
    kinds = {(f.kind, f.executor) for f in tally.failures}
    assert kinds == {("executor", "replay")}
    f = tally.failures[0]
    assert "method='replay'" in f.reproducer()


def test_an_exception_is_reported_with_its_graph(monkeypatch):
    real = fuzz.build_program

    def build(graphs):
        if any(g.seed == CI_SEED + 7 for g in graphs):
            raise RuntimeError("boom")
        return real(graphs)
    monkeypatch.setattr(fuzz.check, "build_program", build)
    tally = fuzz.check_range(0, 10, seed=CI_SEED, executors=("numpy",), dtypes=("float64",))
    assert tally.errors == [(CI_SEED + 7, ("numpy",), "RuntimeError: boom")]
    assert tally.graphs["numpy"] == 9


# -- the command line -----------------------------------------------------------------------

def test_command_line_resumes_and_summarises(capsys):
    status = fuzz.main(["--graphs", "30", "--start", "10", "--seed", str(CI_SEED),
                        "--batch", "10", "--executors", "numpy,replay", "--progress", "0"])
    out = capsys.readouterr().out
    assert status == 0
    assert "graphs 10..39 of 10..39" in out and "resume with --start 40" in out
    assert out.count("\nnumpy ") == 2 and out.count("\nreplay ") == 2


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "batchdiff.fuzz", "--graphs", "20",
                           "--executors", "numpy", "--dtypes", "float64"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "entries vs oracle" in proc.stdout
    assert bd.__name__ == "batchdiff"
