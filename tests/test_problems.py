"""The tanh MLP of ``batchdiff.problems`` and its benchmark problems.

batchdiff's gradient and Hessian of ``mlp`` are checked against central differences
of its value (an oracle that shares nothing with the AD), and so are the hand-written
kernels of ``benchmarks/handwritten.py``, which ``compare.py`` takes as the reference
for every other method; every method of the two benchmark problems must then agree
with them.
"""
import os
import sys

import numpy as np
import pytest

import batchdiff as bd
from batchdiff.problems import mlp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import handwritten as hw  # noqa: E402
import problems as bench  # noqa: E402

STEP = 1e-4
# how close central differences with STEP come: truncation ~ STEP^2, rounding ~ eps / STEP
# for the gradient and eps / STEP^2 for the Hessian (seen: 2e-9 and 2e-8)
DIFFERENCE_TOLERANCE = {"grad": 1e-8, "hessian": 1e-7}


def points(batch=5):
    return np.random.default_rng(0).uniform(-1.0, 1.0, (batch, 8))


def value(x):
    return float(mlp(x))


def difference_gradient(x, h=STEP):
    e = np.eye(len(x))
    return np.array([(value(x + h * e[i]) - value(x - h * e[i])) / (2 * h)
                     for i in range(len(x))])


def difference_hessian(x, h=STEP):
    """Second central differences of the value (four values per entry)."""
    e = np.eye(len(x))
    return np.array([[(value(x + h * (e[i] + e[j])) - value(x + h * (e[i] - e[j]))
                       - value(x - h * (e[i] - e[j])) + value(x - h * (e[i] + e[j])))
                      / (4 * h * h) for j in range(len(x))] for i in range(len(x))])


def by_differences(X, transform):
    one = difference_gradient if transform == "grad" else difference_hessian
    return np.stack([one(x) for x in X])


def hand_written(kernel, X, out_shape):
    out = np.full((len(X),) + out_shape, np.nan)
    kernel(X, out)
    return out


@pytest.mark.parametrize("transform", ["grad", "hessian"])
def test_batchdiff_matches_differences(transform):
    X = points()
    got = getattr(bd, transform)(mlp)(X)
    np.testing.assert_allclose(got, by_differences(X, transform), rtol=0,
                               atol=DIFFERENCE_TOLERANCE[transform])


@pytest.mark.parametrize("kernel, transform, out_shape", [
    (hw.mlp_gradient, "grad", (8,)),
    (hw.mlp_hessian, "hessian", (8, 8)),
])
def test_hand_written_kernels_match_differences_and_batchdiff(kernel, transform, out_shape):
    X = points()
    got = hand_written(kernel, X, out_shape)
    np.testing.assert_allclose(got, by_differences(X, transform), rtol=0,
                               atol=DIFFERENCE_TOLERANCE[transform])
    reference = getattr(bd, transform)(mlp, backend="numpy")(X)     # the interpreter
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-13)


def test_mlp_weights_keep_tanh_off_saturation():
    """At x in [-1, 1]^8 the pre-activations spread about 0.8 (``MLP_W1`` ... are scaled
    for that): a saturated tanh would make both derivatives nearly zero."""
    from batchdiff.problems import MLP_B1, MLP_B2, MLP_W1, MLP_W2
    a1 = points(10_000) @ MLP_W1.T + MLP_B1
    a2 = np.tanh(a1) @ MLP_W2.T + MLP_B2
    for a in (a1, a2):
        assert 0.5 < a.std() < 1.2 and np.mean(np.abs(a) > 2.5) < 0.01


def test_problem_names_are_unique():
    """Results, targets and ``problem(name)`` are keyed by name."""
    names = [p.name for p in bench.PROBLEMS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", ["tanh MLP 8-16-16-1", "tanh MLP 8-16-16-1 input"])
def test_every_method_of_the_mlp_problems_agrees(name):
    """Each of the problem's ``methods`` (no sparse ones for the gradient) gives the
    hand-written kernel's result, dense or sparse."""
    problem = bench.problem(name)
    X = problem.points(64, np.random.default_rng(1))
    expected = problem.method(hw.ALLOCATING, X)(X)
    assert expected.shape == (64,) + problem.out_shape
    sparse = problem.transform != "grad"
    assert ((bench.SPARSE in problem.methods) is sparse
            and (bench.SPARSE_OUT in problem.methods) is sparse)
    for method in problem.methods:
        result = problem.method(method, X)(X)
        dense = result.to_dense() if isinstance(result, bd.SparseResult) else result
        np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-13, err_msg=method)


def test_memory_script_measures_float32_in_a_fresh_process():
    """``benchmarks/memory.py --dtype float32`` passes the dtype to the measured process:
    its output and inputs are float32's bytes, half of float64's."""
    import memory
    assert memory.cases(only="Lorenz", dtype="float32")[0] == (
        "Lorenz-96 n=40", bench.AUTO, bench.problem("Lorenz-96 n=40").batch,
        memory.LOOP_CALLS, "float32")
    rows = {dtype: memory.measure("2-link arm", bench.AUTO_OUT, 1000, 2, dtype)
            for dtype in ("float32", "float64")}
    for dtype, row in rows.items():
        assert "error" not in row, row
        assert row["dtype"] == dtype and row["peak"] >= row["before"] > 0
    assert rows["float32"]["inputs"] * 2 == rows["float64"]["inputs"] == 1000 * 2 * 8
    assert rows["float32"]["output"] * 2 == rows["float64"]["output"] == 1000 * 4 * 8
    assert "Points and outputs in float32" in memory.markdown([rows["float32"]])
    assert "Points and outputs" not in memory.markdown([rows["float64"]])


def test_memory_script_measures_the_hand_written_floors():
    """Both hand-written kernels are measured, as floors beside batchdiff's calls: the
    reused buffer's call touches no new page, the allocating kernel's a whole output
    (64 MB: above glibc's largest mmap threshold, 32 MB, so each output is fresh
    pages), and neither is a target."""
    import memory
    assert {hw.REUSED, hw.ALLOCATING} <= {case[1] for case in memory.cases(only="Lorenz")}
    loops = [case[:2] for case in memory.cases() if case[3] == memory.LOOP_CALLS]
    assert loops == [(name, method) for name in memory.LOOP_PROBLEMS
                     for method in (bench.AUTO, hw.ALLOCATING, bench.AUTO_OUT, hw.REUSED)]
    batch = 2_000_000
    rows = [memory.measure("2-link arm", method, batch) for method in memory.FLOORS]
    for row in rows:
        assert "error" not in row, row
        assert row["output"] == batch * 4 * 8 and row["inputs"] == batch * 2 * 8
    reused, allocating = (row["peak"] - row["before"] for row in rows)
    assert reused < 0.1 * rows[0]["output"] < 0.9 * rows[1]["output"] < allocating
    assert memory.targets(rows) == []
    assert memory.markdown(rows).count("| floor |") == 2


def test_benchmark_helpers_doctests():
    """The examples in the docstrings of the benchmarks' shared modules hold (the
    ``benchmarks`` folder is not among pytest's doctest paths: its scripts need their
    comparison targets)."""
    import doctest
    import memory
    for module in (bench, hw, memory):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
