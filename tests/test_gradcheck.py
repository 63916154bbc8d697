"""check_grads: quiet on correct derivatives, GradcheckError naming the entry on wrong ones.

Each failing case plants one wrong derivative (a stop_gradient hiding a dependency, a
copy of an op rule with a wrong partial, an executor that corrupts its results) and
checks that the error names the transform, point, output, input and both values.
"""
import dataclasses

import numpy as np
import pytest

import batchdiff as bd
from batchdiff import ops
from batchdiff.errors import BatchDiffError
from batchdiff.gradcheck import GradcheckError, check_grads
from corpus import CASES, SCALAR, points

EXECUTORS = dict(backend=("numpy", "numba"), method=("auto", "replay"))


def _case(name):
    return next(c for c in CASES if c[0] == name)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "piecewise"],
                         ids=[c[0] for c in CASES if c[0] != "piecewise"])
def test_corpus_passes_orders_1_and_2(case):
    name, f, shapes, argnums, in_axes = case
    args = points(case, 16, np.float64, np.random.default_rng(3))
    check_grads(f, tuple(args), order=2, argnums=argnums, in_axes=in_axes, **EXECUTORS)


def test_piecewise_corpus_case_is_flagged_for_its_stop_gradient():
    """The corpus' piecewise function has ``stop_gradient(v[0]) * v[1]``: d/dv0 is hidden."""
    name, f, shapes, argnums, in_axes = case = _case("piecewise")
    args = points(case, 16, np.float64, np.random.default_rng(3))
    with pytest.raises(GradcheckError) as info:
        check_grads(f, tuple(args), order=1, backend="numpy")
    err = info.value
    assert err.input == (0, (0,)) and err.output == ()
    x = args[0][err.point]
    # the hidden term's derivative is v[1]
    assert err.numerical - err.analytical == pytest.approx(x[1], rel=1e-6)


def test_stop_gradient_hiding_a_dependency_fails_in_each_mode():
    f = lambda v: np.sin(v[0]) * bd.stop_gradient(v[1] ** 2) + v[2]  # noqa: E731
    X = np.random.default_rng(0).uniform(0.5, 1.5, size=(50, 3))
    for mode, transform in (("forward", "jvp (forward mode)"), ("reverse", "vjp (reverse mode)")):
        with pytest.raises(GradcheckError) as info:
            check_grads(f, X, order=1, modes=mode, backend="numpy")
        err = info.value
        assert err.transform == transform and (err.backend, err.method) == ("numpy", "auto")
        assert err.input == (0, (1,)) and err.output == ()
        x = X[err.point]
        assert err.numerical == pytest.approx(np.sin(x[0]) * 2 * x[1], rel=1e-6)
        assert err.analytical == 0.0
        message = str(err)
        assert transform in message and f"point {err.point}," in message
        assert "input args[0][1]" in message and "numerical" in message


def test_error_is_an_assertion_and_a_batchdiff_error():
    assert issubclass(GradcheckError, AssertionError)
    assert issubclass(GradcheckError, BatchDiffError)


def test_only_the_sampled_points_are_checked():
    """Wrong only where x < 0: points chosen among the positive ones pass."""
    f = lambda v: np.where(v[0] > 0, v[0] ** 2, bd.stop_gradient(v[0] ** 2))  # noqa: E731
    X = np.array([[1.0], [2.0], [-1.5], [0.5]])
    check_grads(f, X, points=[0, 1, 3], backend="numpy")
    with pytest.raises(GradcheckError) as info:
        check_grads(f, X, points=4, backend="numpy")
    assert info.value.point == 2
    assert info.value.numerical == pytest.approx(-3.0, rel=1e-6)


def _with_partials(name, partials):
    """A copy of op ``name``'s rule with other partials (its value rule unchanged)."""
    return dataclasses.replace(ops.OPS[name], partials=partials)


def test_wrong_first_derivative_rule_fails(monkeypatch):
    monkeypatch.setitem(ops.OPS, "sin", _with_partials(
        "sin", lambda a, y: (1.01 * ops._call("cos", a),)))
    f = lambda v: np.sin(v[0]) * v[1]  # noqa: E731
    X = np.random.default_rng(1).uniform(-1, 1, size=(20, 2))
    with pytest.raises(GradcheckError) as info:
        check_grads(f, X, order=1, modes="reverse", backend="numpy")
    err = info.value
    assert err.transform == "vjp (reverse mode)" and err.input == (0, (0,))
    x = X[err.point]
    assert err.numerical == pytest.approx(np.cos(x[0]) * x[1], rel=1e-6)
    assert err.analytical == pytest.approx(1.01 * np.cos(x[0]) * x[1], rel=1e-12)


def test_wrong_second_derivative_rule_fails_only_at_order_2(monkeypatch):
    """sin's partial cos(stop(a)): first derivatives right, second ones missing -sin."""
    monkeypatch.setitem(ops.OPS, "sin", _with_partials(
        "sin", lambda a, y: (ops._call("cos", ops._call("stop", a)),)))
    f = lambda v: np.sin(v[0]) + v[0] * v[1]  # noqa: E731
    X = np.random.default_rng(2).uniform(-1, 1, size=(20, 2))
    check_grads(f, X, order=1, backend="numpy")
    for mode in ("forward", "reverse"):
        with pytest.raises(GradcheckError) as info:
            check_grads(f, X, order=2, modes=mode, backend="numpy")
        err = info.value
        assert err.transform == f"hessian(mode={mode!r})"
        assert err.input == ((0, (0,)), (0, (0,))) and err.output == ()
        assert err.numerical == pytest.approx(-np.sin(X[err.point, 0]), rel=1e-5)
        assert err.analytical == 0.0
    # with the Hessians taken as right, hvp must catch the wrong rule on its own
    monkeypatch.setattr("batchdiff.gradcheck._Check.hessian",
                        lambda self, mode: self.numerical_hessian()[0])
    with pytest.raises(GradcheckError, match=r"hvp \(forward over reverse\)"):
        check_grads(f, X, order=2, modes="reverse", backend="numpy")


def test_every_executor_given_is_checked(monkeypatch):
    """An executor that corrupts its results fails, and is the one named."""
    from batchdiff import kernels
    real = kernels.execute

    def corrupt_replay(tape, blocks, batch, outs, name, method, fresh=True):
        real(tape, blocks, batch, outs, name, method, fresh)
        if method == "replay":
            outs[-1][:, -1] += 1e-3
    monkeypatch.setattr(kernels, "execute", corrupt_replay)
    f = lambda v: np.sum(np.tanh(v) * v[::-1])  # noqa: E731
    X = np.random.default_rng(3).normal(size=(30, 3))
    check_grads(f, X, backend=("numpy", "numba"), method=("auto", "compiled"))
    with pytest.raises(GradcheckError) as info:
        check_grads(f, X, backend=("numpy", "numba"), method=("auto", "replay", "compiled"))
    assert (info.value.backend, info.value.method) == ("numba", "replay")
    assert "backend='numba', method='replay'" in str(info.value)


def test_several_arguments_shared_ones_and_vector_outputs():
    name, f, shapes, argnums, in_axes = case = _case("network_shared_w")
    x, w = points(case, 8, np.float64, np.random.default_rng(5))
    check_grads(f, (x, w), argnums=(0, 1), in_axes=(0, None), **EXECUTORS)
    bad = lambda x, w: f(x, bd.stop_gradient(w))  # noqa: E731
    check_grads(bad, (x, w), argnums=0, in_axes=(0, None), backend="numpy")
    with pytest.raises(GradcheckError) as info:
        check_grads(bad, (x, w), argnums=(0, 1), in_axes=(0, None), backend="numpy")
    argnum, index = info.value.input
    assert argnum == 1 and len(index) == 2 and info.value.output in ((0,), (1,))
    assert f"input args[1][{index[0]}, {index[1]}]" in str(info.value)


def test_float32_and_integer_inputs_are_checked_in_float64():
    """With float32 differences at eps=1e-6 nothing would pass; in float64 all does."""
    f = lambda v: np.exp(v[0]) * np.sin(3.0 * v[1]) / (1.0 + v[0] ** 2)  # noqa: E731
    X = np.random.default_rng(6).uniform(-1, 1, size=(40, 2))
    check_grads(f, X.astype(np.float32), **EXECUTORS)
    check_grads(f, np.arange(8).reshape(4, 2), backend="numpy")


def test_batch_axis_other_than_0_and_scalar_points():
    rng = np.random.default_rng(7)
    check_grads(lambda v: np.sum(np.sin(v) * v), rng.uniform(size=(3, 10)), in_axes=1,
                backend="numpy")
    check_grads(lambda t: np.stack([np.sin(t), t ** 3]), rng.uniform(size=7), backend="numpy")
    with pytest.raises(GradcheckError, match=r"input args\[0\]:"):
        check_grads(lambda t: bd.stop_gradient(t) * t, rng.uniform(size=7), backend="numpy")


def test_large_values_pass_with_the_rounding_allowance():
    """|f| about 1e7: differences of values carry 1e-9 relative rounding, not a bug."""
    f = lambda v: 1e5 * np.exp(v[0]) * np.sum(np.cos(v))  # noqa: E731
    check_grads(f, np.random.default_rng(8).uniform(-3, 3, size=(50, 5)), backend="numpy")


def test_compiled_kernels_are_checked():
    f = lambda v: np.sum(np.sin(v) * v[::-1]) + np.prod(v[:2])  # noqa: E731
    check_grads(f, np.random.default_rng(9).normal(size=(30, 4)), backend="numba",
                method="compiled")


def test_bad_options():
    X = np.ones((3, 2))
    f = lambda v: np.sum(v)  # noqa: E731
    with pytest.raises(ValueError, match="order"):
        check_grads(f, X, order=3)
    with pytest.raises(ValueError, match="modes"):
        check_grads(f, X, modes=("sideways",))
    with pytest.raises(ValueError, match="no executor"):
        check_grads(f, X, backend="numpy", method="compiled")
    with pytest.raises(IndexError, match="3 points"):
        check_grads(f, X, points=[5])
    check_grads(f, np.ones((0, 2)))                 # nothing to check


@pytest.mark.parametrize("name", sorted(SCALAR - {"piecewise"}))
def test_hvp_is_checked_for_scalar_corpus_functions(name, monkeypatch):
    """hvp runs for scalar functions in reverse mode: a corrupted hvp fails."""
    name, f, shapes, argnums, in_axes = case = _case(name)
    args = points(case, 4, np.float64, np.random.default_rng(10))
    real = bd.api.Transformed.__call__

    def call(self, *a, **k):
        out = real(self, *a, **k)
        if self.kind == "hvp":
            out = tuple(o * 1.001 for o in out) if isinstance(out, tuple) else out * 1.001
        return out
    monkeypatch.setattr(bd.api.Transformed, "__call__", call)
    check_grads(f, tuple(args), order=2, modes="forward", argnums=argnums, in_axes=in_axes,
                backend="numpy")
    with pytest.raises(GradcheckError, match="hvp"):
        check_grads(f, tuple(args), order=2, modes="reverse", argnums=argnums,
                    in_axes=in_axes, backend="numpy")
