"""Every Numba executor agrees with the reference interpreter on the whole corpus."""
import numpy as np
import pytest

import batchdiff as bd
from batchdiff.kernels import bounded, numba_compiled
from corpus import CASES, calls


@pytest.fixture
def tiled(monkeypatch):
    """Compiled kernels printed tiled (SIMD across points) whatever the tape."""
    monkeypatch.setattr(numba_compiled, "TILED_MIN_OPS_PER_STORE", 0)
    monkeypatch.setattr(numba_compiled, "_kernels", bounded.LRU(
        bounded.MAX_KERNELS, on_evict=numba_compiled._unload))
    monkeypatch.setattr(numba_compiled, "_names", bounded.LRU(bounded.MAX_TAPES))


def _method(method, request):
    """"tiled" is the compiled executor with every kernel tiled."""
    if method == "tiled":
        request.getfixturevalue("tiled")
        return "compiled"
    return method

def _assert_same(got, ref, rtol, atol):
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref)
        for g, r in zip(got, ref):
            _assert_same(g, r, rtol, atol)
        return
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


# tiled kernels (not chosen by default) in float64 only: each costs a compile
EXECUTORS = [(d, m) for d in (np.float64, np.float32) for m in ("replay", "compiled", "tiled")
             if not (m == "tiled" and d == np.float32)]


@pytest.mark.parametrize("dtype,method", EXECUTORS,
                         ids=[f"{np.dtype(d).name}-{m}" for d, m in EXECUTORS])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_numba_matches_reference(case, dtype, method, request):
    method = _method(method, request)
    rng = np.random.default_rng(7)
    name, f, shapes, argnums, in_axes = case
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    for kind, args, extra in calls(case, 37, dtype, rng):
        args = args + extra
        make = getattr(bd, kind)
        ref = make(f, argnums, in_axes=in_axes, backend="numpy")(*args)
        got = make(f, argnums, in_axes=in_axes, backend="numba", method=method)(*args)
        _assert_same(got, ref, **tol)


@pytest.mark.parametrize("method", ["replay", "compiled", "tiled"])
def test_parallel_path_and_batch_sizes(method, request):
    """Large batches run in parallel blocks; ragged last blocks (and tiles) and B=1 are
    handled."""
    method = _method(method, request)
    rng = np.random.default_rng(3)
    h = bd.hessian(CASES[0][1], backend="numba", method=method)
    ref = bd.hessian(CASES[0][1], backend="numpy")
    for batch in (1, 5, 31, 33, 4099):
        x = rng.uniform(0, 1, size=(batch, 6))
        np.testing.assert_allclose(h(x), ref(x), rtol=1e-12)


def test_shared_and_per_point_tangents():
    rng = np.random.default_rng(4)
    f = CASES[1][1]
    x = rng.uniform(size=(300, 8))
    v = rng.uniform(size=8)
    for method in ("replay", "compiled"):
        got = bd.jvp(f, backend="numba", method=method)(x, v)
        ref = bd.jvp(f, backend="numpy")(x, v)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-12)


def test_nan_and_inf_propagate_through_numba():
    f = lambda v: np.sqrt(v[0]) + np.log(v[1])  # noqa: E731
    x = np.array([[-1.0, 1.0], [4.0, 0.0], [np.nan, 2.0], [np.inf, 1.0]])
    ref = bd.value_and_grad(f, backend="numpy")(x)
    for method in ("replay", "compiled"):
        got = bd.value_and_grad(f, backend="numba", method=method)(x)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_empty_batch_numba():
    out = bd.hessian(CASES[0][1], backend="numba")(np.zeros((0, 6)))
    assert out.shape == (0, 6, 6)


def test_default_backend_is_numba_and_auto_chooses():
    from batchdiff.kernels import numba_exec
    f = lambda v: np.sum(np.sin(v) * v[::-1])  # noqa: E731
    tape = bd.grad(f).tape(np.ones((1, 4)))
    sources = tuple(("x", i) for i in range(4))
    assert numba_exec.choose(tape, 10, np.dtype(np.float64), sources) in ("replay", "compiled")
    big = numba_exec.choose(tape, numba_exec.COMPILE_MIN_POINTS, np.dtype(np.float64), sources)
    assert big in ("compiled", "replay")      # both ready: they race on the next calls
    x = np.random.default_rng(0).random((20, 4))
    np.testing.assert_allclose(bd.grad(f)(x), bd.grad(f, backend="numpy")(x), rtol=1e-12)


def test_constant_outputs_including_nonfinite():
    """Constant outputs (zeros of a Jacobian, inf, nan) are filled by every executor."""
    f = lambda v: np.stack([v[0] * 0 + np.inf, v[1] * 0 - np.inf, v[0] * 0 + np.nan,  # noqa: E731
                            v[0] * v[1], v[0] * v[1], 2.0 * v[0]])
    x = np.random.default_rng(5).random((9, 2))
    ref = bd.jacobian(f, backend="numpy")(x), bd.jvp(f, backend="numpy")(x, x)
    for method in ("replay", "compiled"):
        got = bd.jacobian(f, method=method)(x), bd.jvp(f, method=method)(x, x)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1][0], ref[1][0])
        np.testing.assert_array_equal(got[1][1], ref[1][1])


def test_auto_keeps_the_faster_executor():
    from batchdiff.kernels.numba_exec import _Race
    race = _Race()
    seen = []
    for replay_time, compiled_time in [(1.0, 2.0)] * 4:
        how = race.pick()
        seen.append(how)
        race.record(how, replay_time if how == "replay" else compiled_time, 10_000)
    assert sorted(seen[:2]) == ["compiled", "replay"]          # they take turns
    for _ in range(4):
        how = race.pick()
        race.record(how, 1.0 if how == "replay" else 2.0, 10_000)
    assert race.winner == "replay" and race.pick() == "replay"
    small = _Race()
    small.record("replay", 1.0, 10)                             # too small to time
    assert small.times[True]["replay"] == []


def test_auto_times_fresh_and_reused_outputs_apart():
    """Calls into a reused out= buffer never race against calls that page-fault a new one."""
    from batchdiff.kernels.numba_exec import _Race
    race = _Race()
    for _ in range(3):      # replay only ever timed on reused buffers: fast, but no verdict
        race.record("replay", 1.0, 10_000, fresh=False)
        race.record("compiled", 2.0, 10_000, fresh=True)
    assert race.winner is None
    assert race.pick(fresh=True) == "replay" and race.pick(fresh=False) == "compiled"
    for _ in range(3):      # the same executors, now compared like with like
        race.record("replay", 3.0, 10_000, fresh=True)
    assert race.winner == "compiled"


MATH_METHODS = [(m, d) for m in ("tiled", "replay") for d in (np.float64, np.float32)]


@pytest.mark.parametrize("method, dtype", MATH_METHODS)
def test_own_tanh_is_within_two_ulp(method, dtype, request):
    """Tiled kernels spell tanh without libm (so that it vectorises), in each dtype's own
    precision, replay in float64: within 2 ulp of the exact tanh (NumPy's in float64,
    rounded to float32) over its whole range, NaN, infinities and signed zeros as NumPy,
    and its derivative rule follows."""
    rng = np.random.default_rng(11)
    tiny = np.finfo(dtype).tiny
    x = np.concatenate([rng.uniform(-1, 1, 20000), rng.uniform(-25, 25, 20000),
                        rng.standard_normal(5000) * 1e-4, np.geomspace(tiny, 700, 2000),
                        -np.geomspace(tiny, 700, 2000), [0.0, -0.0, np.inf, -np.inf, np.nan,
                                                         0.625, -0.625, 9.01, 19.06, tiny / 4]])
    x = x.astype(dtype)
    f = bd.value_and_grad(lambda v: np.tanh(v[0]), method=_method(method, request))
    if method == "tiled":
        assert ("_tanhf(" if dtype == np.float32 else "_tanh(") in f.source(x[:, None])
    value, grad = f(x[:, None])
    assert value.dtype == dtype
    exact = np.tanh(x.astype(np.float64))
    ref = exact.astype(dtype)
    same = (value == ref) | (np.isnan(value) & np.isnan(ref))
    assert np.array_equal(np.signbit(value[x == 0]), np.signbit(x[x == 0]))
    ulp = np.abs(value[~same] - exact[~same]) / np.spacing(np.abs(ref[~same])).astype(np.float64)
    assert ulp.max() <= 2 and same.mean() > 0.7
    np.testing.assert_allclose(grad[:, 0], 1 - value ** 2, rtol=0, atol=0)


def _ulp(value, exact, dtype):
    """|value - exact| in units in the last place of ``dtype`` (0 where they agree, NaN
    included)."""
    same = (value == exact.astype(dtype)) | (np.isnan(value) & np.isnan(exact))
    ulp = np.abs(value - exact) / np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    return np.where(same, 0.0, ulp)


@pytest.mark.parametrize("method, dtype", MATH_METHODS)
def test_own_sin_and_cos_are_within_two_ulp(method, dtype, request):
    """Tiled kernels and replay spell sin and cos without libm (so that they vectorise):
    within 2 ulp of NumPy's below TRIG_MAX (3 in float32 tiled kernels, below
    TRIG_MAX_F), also at the doubles nearest multiples of pi/2;
    a tile (a replay block) holding an argument beyond TRIG_MAX, or an infinite one, is
    done with libm; NaN and signed zeros as NumPy."""
    from batchdiff.kernels import vector_math
    limit = vector_math.trig_max(dtype if method == "tiled" else np.float64)
    rng = np.random.default_rng(12)
    k = np.arange(1.0, 4000.0) * (limit / 4000 / (np.pi / 2))
    near = np.round(k) * (np.pi / 2)
    x = np.concatenate([rng.uniform(-4, 4, 20000), rng.uniform(-limit, limit, 20000),
                        near, np.nextafter(near, 0), -np.nextafter(near, np.inf),
                        rng.standard_normal(3000) * 1e-6, [0.0, -0.0, np.nan, 5e-324]])
    x = rng.permutation(x)
    x[::997] = rng.uniform(limit, 1e22, x[::997].size) * rng.choice([-1, 1], x[::997].size)
    x[5] = np.inf
    x[-3] = -np.inf
    x = x.astype(dtype)
    f = bd.value_and_grad(lambda v: np.sin(v[0]), method=_method(method, request))
    if method == "tiled":
        source = f.source(x[:, None])
        suffix = "f" if dtype == np.float32 else ""
        assert f"_sin{suffix}(" in source and f"_cos{suffix}(" in source and "np.sin(" in source
    value, grad = f(x[:, None])
    assert value.dtype == grad.dtype == dtype
    exact = x.astype(np.float64)
    bound = 3 if dtype == np.float32 and method == "tiled" else 2     # float32 alone: 2.4
    with np.errstate(invalid="ignore"):
        assert _ulp(value, np.sin(exact), dtype).max() <= bound
        assert _ulp(grad[:, 0], np.cos(exact), dtype).max() <= bound
    assert np.array_equal(np.signbit(value[x == 0]), np.signbit(x[x == 0]))
    assert np.isnan(value[~np.isfinite(x)]).all()


@pytest.mark.parametrize("tiled", [False, True])
def test_float32_constants_are_module_globals(tiled):
    """A float32 kernel names each distinct constant once, as a module global set to
    ``np.float32(c)`` (Numba types a call of ``np.float32`` at every use, far more slowly):
    0.0 and -0.0 stay two constants, NaN and infinities keep theirs, and the kernel's
    values are the reference interpreter's, bit for bit (the constants rounded to float32,
    not kept in float64)."""
    def f(x):
        return (x[0] * 0.1 + np.maximum(x[1], -0.5) * 0.1 - np.minimum(x[1], 0.25)
                + np.where(x[0] > 2.5, np.inf, 0.3) + np.where(x[0] > 3.5, np.nan, 0.0)
                + np.where(x[0] > 0.5, -0.0, 1.0))
    x = np.array([[0.7, -1.3], [3.0, 0.0], [4.0, -0.0], [1.0, 2.0], [0.2, 0.25]], np.float32)
    tape = bd.jvp(f, backend="numpy").tape(x, x)
    sources = [("x", i) for i in range(4)]
    source = numba_compiled.print_kernel(tape, np.float32, sources, tiled=tiled)
    head, body = source.split("\nN_LEAVES")
    constants = dict(line.split(" = ") for line in head.splitlines() if line.startswith("_c"))
    assert set(constants.values()) >= {"np.float32(0.1)", "np.float32(0.0)",
                                       "np.float32(-0.0)", "np.float32(np.inf)",
                                       "np.float32(np.nan)"}
    assert len(set(constants.values())) == len(constants)
    assert all(name in body for name in constants)
    assert "np.float32(0" not in body and "np.float32(np" not in body
    # the compared constants are read at run time (test_compared_constants_...)
    assert "CONSTANTS = np.array([(-0.5), 0.25, 2.5, 3.5, 0.5], np.float32)" in body
    v = np.ones_like(x)
    want = bd.jvp(f, backend="numpy")(x, v)
    got = bd.jvp(f, method="compiled")(x, v)
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("method", ["compiled", "tiled"])
def test_compared_constants_survive_llvm(method, request):
    """A constant that an op compares is read at run time, not printed as a literal:
    LLVM 22 folds ``np.where(np.maximum(1.0, x) >= 1.0, np.maximum(1.0, x), 1.0)`` to
    ``np.maximum(1.0, x)``, NaN at x = NaN (the fuzzer's graph seed 99239), and picks the
    wrong zero in the same pattern with 0.0. NumPy itself is the oracle, bit for bit
    (NaN where NaN, the sign of every zero)."""
    def f(x):
        hi, lo, relu = np.maximum(1.0, x[0]), np.minimum(-1.0, x[0]), np.maximum(0.0, x[0])
        clipped = np.clip(x[0], 0.0, 1.0)
        return np.stack([np.where(hi >= 1.0, hi, 1.0), np.where(hi > 1.0, 1.0, hi),
                         np.where(lo <= -1.0, lo, -1.0), np.where(relu > 0.0, relu, 0.0),
                         np.where(clipped >= 0.0, clipped, 0.5),
                         np.where(np.cos(np.exp(x[1]) / 0.0) * x[0] >= 1.0, 2.0, 1.0)])
    x = np.array([np.nan, -0.0, 0.0, 0.5, 1.0, 2.0, -2.0, np.inf, -np.inf])
    X = np.stack([x, np.zeros_like(x)], axis=1)
    with np.errstate(all="ignore"):
        want = f(X.T).T
    got, _ = bd.jvp(f, method=_method(method, request))(X, np.ones_like(X))
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def _branching_chain(rng, steps=3):
    """A random chain of maxima, minima, clips and signs of two inputs and constants,
    each followed by an ``np.where`` that compares its value with the same constant and
    selects one of the two (the shape of test_compared_constants_survive_llvm): its
    lines and the names of all its values."""
    constants = ["0.0", "-0.0", "1.0", "-1.0"]
    lines, values = [], ["x[0]", "x[1]"]
    for _ in range(steps):
        a, c = rng.choice(values[-2:]), rng.choice(constants)
        kind = rng.integers(4)
        first, second = (a, c) if rng.random() < 0.5 else (c, a)
        lines.append(f"v{len(lines)} = " + (
            f"np.maximum({first}, {second})" if kind == 0 else
            f"np.minimum({first}, {second})" if kind == 1 else
            f"np.clip({a}, {'0.0' if c == '1.0' else c}, 1.0)" if kind == 2 else
            f"np.sign({a})"))
        v, op = f"v{len(lines) - 1}", rng.choice([">=", ">", "<=", "<", "==", "!="])
        test = f"{v} {op} {c}" if rng.random() < 0.5 else f"{c} {op} {v}"
        picks = (v, c) if rng.random() < 0.5 else (c, v)
        lines.append(f"v{len(lines)} = np.where({test}, {picks[0]}, {picks[1]})")
        values += [v, f"v{len(lines) - 1}"]
    return lines, values[2:]


@pytest.mark.parametrize("method", ["compiled", "tiled"])
def test_random_branching_chains_give_numpys_bits(method, request):
    """40 random chains of the branching ops on constants (``_branching_chain``), every
    value an output of one kernel, at every pair of special values: NumPy's bits, NaN
    and signed zeros included."""
    rng = np.random.default_rng(3)
    body, outs = [], []
    for k in range(40):
        lines, values = _branching_chain(rng)
        body += [line.replace("v", f"c{k}_") for line in lines]
        outs += [value.replace("v", f"c{k}_") for value in values]
    source = "def f(x):\n" + "".join(f"    {line}\n" for line in body)
    source += f"    return np.stack([{', '.join(outs)}])\n"
    namespace = {"np": np, "inf": np.inf, "nan": np.nan}
    exec(source, namespace)
    f = namespace["f"]
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -3.0])
    X = np.stack(np.meshgrid(special, special), axis=-1).reshape(-1, 2)
    with np.errstate(all="ignore"):
        want = np.stack(np.broadcast_arrays(*f(X.T)), axis=1)
    got, _ = bd.jvp(f, method=_method(method, request))(X, np.ones_like(X))
    np.testing.assert_array_equal(got, want, err_msg=source)
    assert np.array_equal(np.signbit(got), np.signbit(want)), source


def test_a_large_call_times_the_executors_on_slices_of_it(monkeypatch):
    """While replay and the compiled kernel race, a large call runs a slice of points on
    each (timing both) and the rest on the one ahead: never all of it on the slower
    one. The results are right whichever executor wrote which rows."""
    from batchdiff.kernels import numba_exec
    monkeypatch.setattr(numba_exec._Race, "MIN_POINTS", 64)
    monkeypatch.setattr(numba_exec._Race, "SLICED_POINTS", 256)
    f = lambda v: np.sum(np.sin(v) * v[::-1]) * 1.25  # noqa: E731
    X = np.random.default_rng(8).random((1000, 3))
    ref = bd.grad(f, backend="numpy")(X)
    for method in ("replay", "compiled"):          # both loaded in this process
        bd.grad(f, method=method)(X)
    g = bd.grad(f)
    key = (g.tape(X), "float64", (("x", 0), ("x", 1), ("x", 2)), (3,))
    calls = []
    real = numba_exec._run
    monkeypatch.setattr(numba_exec, "_run", lambda how, *a: calls.append((how, len(a[1]))) or
                        real(how, *a))
    for k in range(numba_exec._Race.SAMPLES):
        np.testing.assert_allclose(g(X), ref, rtol=1e-13)
        race = numba_exec.entry(key).race
        assert sorted(calls[-3:-1]) == [("compiled", 64), ("replay", 64)]    # the slices
        assert calls[-1][1] == 1000 - 128                                    # the rest
        assert all(len(t) == k + 1 for t in race.times[True].values())
    assert race.winner in ("replay", "compiled")
    np.testing.assert_allclose(g(X), ref, rtol=1e-13)
    assert calls[-1] == (race.winner, 1000)          # decided: whole calls on the winner


def test_the_race_compiles_in_the_call_when_background_compiles_are_off(monkeypatch):
    """With BATCHDIFF_BACKGROUND_COMPILE=0 a kernel not on disk is compiled by the call
    that first wants it, also on a raced call's slice: never a fall back to NumPy."""
    import time
    from batchdiff.kernels import numba_exec
    monkeypatch.setenv("BATCHDIFF_BACKGROUND_COMPILE", "0")
    monkeypatch.setattr(numba_exec._Race, "MIN_POINTS", 64)
    monkeypatch.setattr(numba_exec._Race, "SLICED_POINTS", 256)
    monkeypatch.setattr(numba_exec, "COMPILE_MIN_POINTS", 1)
    c = 1 + time.time_ns() % 10**6 / 10**7       # a tape no earlier run compiled
    f = lambda v: np.sum(np.cos(v) * v[::-1]) * c  # noqa: E731
    X = np.random.default_rng(9).random((1000, 3))
    bd.grad(f, method="replay")(X)                # replay loaded
    ran = []
    monkeypatch.setattr(numba_exec, "evaluate", lambda *a, **k: ran.append("numpy"))
    np.testing.assert_allclose(bd.grad(f)(X), bd.grad(f, backend="numpy")(X), rtol=1e-12,
                               atol=1e-14)
    assert ran == []
