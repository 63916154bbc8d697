"""Result memory: ``out=`` buffers on every transform and executor, and no output kept alive.

The reference for every value is the NumPy interpreter without ``out=`` (itself tested
against SymPy and finite differences in test_ops.py and test_properties.py).
"""
import gc
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest

import batchdiff as bd
from batchdiff.errors import ShapeError
from corpus import CASES, calls

EXECUTORS = [("numpy", "auto"), ("numba", "replay"), ("numba", "compiled")]
SENTINEL = -12345.0


def _like(ref, fill=SENTINEL):
    """Fresh buffers shaped like ``ref`` (nested tuples of arrays), filled with ``fill``."""
    if isinstance(ref, tuple):
        return tuple(_like(r, fill) for r in ref)
    return np.full(ref.shape, fill, dtype=ref.dtype)


def _assert_is(got, buf):
    if isinstance(buf, tuple):
        assert isinstance(got, tuple) and len(got) == len(buf)
        for g, b in zip(got, buf):
            _assert_is(g, b)
    else:
        assert got is buf


def _assert_equal(got, ref):
    if isinstance(ref, tuple):
        for g, r in zip(got, ref):
            _assert_equal(g, r)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)


def _leaves(result):
    if isinstance(result, tuple):
        return [x for r in result for x in _leaves(r)]
    if isinstance(result, bd.SparseResult):
        return [result.values]
    return [result]


def _root(a):
    while a.base is not None:
        a = a.base
    return a


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_out_on_every_transform(case, backend, method):
    """``g(*args, out=buf)`` writes every result into ``buf`` and returns ``buf`` itself."""
    rng = np.random.default_rng(17)
    name, f, shapes, argnums, in_axes = case
    for kind, args, extra in calls(case, 23, np.float64, rng):
        make = getattr(bd, kind)
        ref = make(f, argnums, in_axes=in_axes, backend="numpy")(*args, *extra)
        buf = _like(ref)
        got = make(f, argnums, in_axes=in_axes, backend=backend, method=method)(
            *args, *extra, out=buf)
        _assert_is(got, buf)
        _assert_equal(buf, ref)


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
def test_out_float32_and_reuse_across_calls(backend, method):
    """The same buffer serves call after call (an ODE or Newton loop), in float32 too."""
    f = CASES[1][1]                                   # Lorenz-96, n = 8
    g = bd.jacobian(f, backend=backend, method=method)
    ref = bd.jacobian(f, backend="numpy")
    rng = np.random.default_rng(3)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        buf = np.empty((3000, 8, 8), dtype=dtype)
        for _ in range(3):
            x = rng.uniform(-2, 2, (3000, 8)).astype(dtype)
            assert g(x, out=buf) is buf
            np.testing.assert_allclose(buf, ref(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend,method", EXECUTORS, ids=[f"{b}-{m}" for b, m in EXECUTORS])
def test_results_die_with_their_last_reference(backend, method):
    """With the cyclic GC off, dropping a result frees its memory at once (no cycles)."""
    rng = np.random.default_rng(5)
    cases = [c for c in CASES if c[0] in ("rosenbrock", "two_args_both", "network_shared_w")]
    transforms = []
    for case in cases:
        name, f, shapes, argnums, in_axes = case
        for kind, args, extra in calls(case, 11, np.float64, rng):
            transforms.append((getattr(bd, kind)(f, argnums, in_axes=in_axes, backend=backend,
                                                 method=method), args + extra))
    f = CASES[0][1]
    x = rng.uniform(0, 1, (11, 6))
    transforms += [(bd.hessian(f, backend=backend, method=method, sparse=True), [x]),
                   (bd.jacobian(bd.grad(f), backend=backend, method=method, sparse=True), [x])]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for g, args in transforms:
            result = g(*args)
            refs = [weakref.ref(_root(a)) for a in _leaves(result)]
            del result
            assert all(r() is None for r in refs), f"{g!r} left its result alive"
    finally:
        if was_enabled:
            gc.enable()


FIRST_CALL = textwrap.dedent("""
    import gc, weakref
    import numpy as np, batchdiff as bd
    gc.disable()
    x = np.random.default_rng(0).uniform(size=(50, 3))
    result = bd.hessian(lambda v: np.sum(np.sin(v) * v[::-1]), method="compiled")(x)
    alive = weakref.ref(result.base if result.base is not None else result)
    del result
    print(alive() is None)
""")


def test_a_call_that_compiles_leaves_nothing_alive(tmp_path):
    """Numba's compiler leaves cycles that hold its callers' frames; they are freed."""
    env = dict(os.environ, BATCHDIFF_BACKGROUND_COMPILE="0", BATCHDIFF_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "True"


LOOP = textwrap.dedent("""
    import gc, resource, sys
    import numpy as np, batchdiff as bd
    gc.disable()                      # a result kept by a cycle would now never be freed
    def l96(x):
        n = x.shape[0]
        return np.stack([(x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + 8.0 for i in range(n)])
    backend, method = sys.argv[1], sys.argv[2]
    g = bd.jacobian(l96, backend=backend, method=method)
    X = np.random.default_rng(0).uniform(-2, 2, (10_000, 40))
    g(X)                              # trace, AD, kernels loaded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(50):
        g(X)                          # result dropped at once
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)    # ru_maxrss is in KiB on Linux
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend,method", [("numpy", "auto"), ("numba", "replay")])
def test_loop_of_calls_runs_in_bounded_memory(backend, method):
    """50 calls whose results are dropped: peak memory grows by less than one more output."""
    output = 10_000 * 40 * 40 * 8                     # 128 MB: a leak of 50 shows as 6 GB
    env = dict(os.environ, BATCHDIFF_BACKGROUND_COMPILE="0")
    done = subprocess.run([sys.executable, "-c", LOOP, backend, method], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    growth = int(done.stdout.split()[-1])
    assert growth < output, f"peak RSS grew by {growth / 1e6:.0f} MB over 50 calls"


def test_out_errors_say_what_is_expected():
    f = CASES[0][1]
    g = bd.hessian(f, backend="numba", method="replay")
    x = np.random.default_rng(0).uniform(size=(5, 6))
    with pytest.raises(ShapeError, match=r"\(5, 6, 6\)"):
        g(x, out=np.empty((5, 36)))
    with pytest.raises(TypeError, match="float64"):
        g(x, out=np.empty((5, 6, 6), np.float32))
    frozen = np.empty((5, 6, 6))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        g(x, out=frozen)
    with pytest.raises(ValueError, match="C-contiguous"):
        g(x, out=np.empty((6, 6, 5)).transpose(2, 0, 1))
    with pytest.raises(TypeError, match="one array: pass the array"):
        g(x, out=[[1.0]])
    with pytest.raises(TypeError, match="tuple of 2"):
        bd.value_and_grad(f)(x, out=np.empty((5, 6)))
    with pytest.raises(TypeError, match="tuple of 2"):
        bd.value_and_grad(f)(x, out=(np.empty(5),))
    with pytest.raises(ValueError, match="shares memory with an input"):
        bd.grad(f, method="replay")(x, out=x)
    both = np.empty((5, 6))
    with pytest.raises(ValueError, match="share memory"):
        bd.grad(lambda a, b: np.sum(a * b), argnums=(0, 1))(x, x, out=(both, both))
    with pytest.raises(TypeError, match="inside another transform"):
        bd.grad(lambda v: np.sum(bd.grad(f)(v[None], out=np.empty((1, 6)))))(x)


def test_out_strided_for_the_reference_interpreter():
    """The NumPy interpreter writes into any layout whose per-point axes merge."""
    f = CASES[0][1]
    x = np.random.default_rng(1).uniform(size=(7, 6))
    ref = bd.hessian(f, backend="numpy")(x)
    batch_fastest = np.empty((6, 6, 7)).transpose(2, 0, 1)     # the GPU's layout
    got = bd.hessian(f, backend="numpy")(x, out=batch_fastest)
    assert got is batch_fastest
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    with pytest.raises(ValueError, match="in place"):
        bd.hessian(f, backend="numpy")(x, out=np.empty((7, 6, 6)).transpose(0, 2, 1))


def test_out_with_an_empty_batch():
    f = CASES[0][1]
    buf = np.empty((0, 6, 6))
    assert bd.hessian(f)(np.zeros((0, 6)), out=buf) is buf
