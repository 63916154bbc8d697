"""Dask arrays in, lazy Dask arrays out, on real ``dask.distributed`` clusters.

Every result is compared with the in-memory call on the same NumPy arrays (itself tested
against the reference interpreter, SymPy and finite differences elsewhere). Two
``LocalCluster``s start once for the module: two single-threaded worker processes, and
one worker of two threads inside this process. Most checks run the NumPy reference
interpreter or the replay interpreter on the workers (compiled once per machine); one
test loads a compiled kernel from a warm cache.
"""
import os
import pickle
import signal
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402  (after the skips)
from dask.utils import key_split  # noqa: E402

import batchdiff as bd  # noqa: E402
from batchdiff import dask_arrays, demo  # noqa: E402
from batchdiff.errors import ShapeError  # noqa: E402
from batchdiff.kernels import cupy_exec, numba_compiled  # noqa: E402
from corpus import CASES, calls, rosenbrock  # noqa: E402

RAGGED = (3, 0, 4)                     # a ragged last block and an empty one
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-6, atol=2e-6)}


def _cluster(**options):
    cluster = distributed.LocalCluster(dashboard_address=":0", **options)
    return cluster, distributed.Client(cluster, set_as_default=False)


def _serve(**options):
    """A client of a new LocalCluster, closed with it when the fixture ends."""
    cluster, client = _cluster(**options)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def processes():
    yield from _serve(n_workers=2, threads_per_worker=1, processes=True)


@pytest.fixture(scope="module")
def threads():
    yield from _serve(n_workers=1, threads_per_worker=2, processes=False)


@pytest.fixture(params=["processes", "threads"])
def client(request):
    return request.getfixturevalue(request.param)


def compute(result, client):
    """``result`` (nested tuples of Dask arrays) computed on ``client``'s cluster."""
    return dask.compute(result, scheduler=client)[0]


def chunked(a, chunks=RAGGED):
    return da.from_array(a, chunks=(chunks,) + a.shape[1:])


def leaves(result):
    if isinstance(result, (tuple, list)):
        return [x for r in result for x in leaves(r)]
    return [result]


def assert_same(got, ref, dtype):
    assert len(leaves(got)) == len(leaves(ref))
    for g, r in zip(leaves(got), leaves(ref)):
        assert g.dtype == r.dtype == dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, **TOLERANCE[dtype])


# -- every transform, block by block -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_every_transform_matches_memory(client, dtype):
    """Every transform of every corpus case (argnums tuples, shared arguments, 0-d and 2-D
    points), batch and tangents chunked (3, 0, 4); one compute for all of them."""
    rng = np.random.default_rng(1)
    lazy, expected = [], []
    for case in CASES:
        name, f, shapes, argnums, in_axes = case
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(shapes)
        for kind, args, extra in calls(case, sum(RAGGED), dtype, rng):
            g = getattr(bd, kind)(f, argnums, in_axes=in_axes, backend="numpy")
            expected.append(g(*args, *extra))
            dargs = [chunked(a) if axis is not None else a for a, axis in zip(args, axes)]
            lazy.append(g(*dargs, *[chunked(e) for e in extra]))
            assert all(isinstance(x, da.Array) and x.chunks[0] == RAGGED
                       for x in leaves(lazy[-1])), (name, kind)
    for got, ref in zip(compute(lazy, client), expected):
        assert_same(got, ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_replay_kernels_run_in_parallel_blocks(client, dtype):
    """Blocks large enough for the parallel kernels, two at a time in the threaded worker:
    no 'Concurrent access' abort, same numbers as in memory."""
    X = np.random.default_rng(2).uniform(-2, 2, (6000, 6)).astype(dtype)
    U = np.random.default_rng(3).uniform(-1, 1, (6000, 6)).astype(dtype)
    lorenz = CASES[1][1]
    hess = bd.hessian(rosenbrock, backend="numba", method="replay")
    vjp = bd.vjp(lorenz, backend="numba", method="replay")
    got = compute([hess(chunked(X, (3000, 3000))), vjp(chunked(X, (2500, 3500)), U)], client)
    assert_same(got, [hess(X), vjp(X, U)], dtype)


def test_kernels_use_the_workers_threads(processes, threads):
    """A task's kernels get as many Numba threads as its worker has task threads."""
    import numba
    plan = dask_arrays._Plan("grad", 0, (0,), None, "auto", "auto", None, None, None)

    def inside_a_task():
        with dask_arrays._kernel_threads(plan, (np.ones(1),)):
            return numba.get_num_threads()
    assert processes.submit(inside_a_task, pure=False).result() == 1
    assert threads.submit(inside_a_task, pure=False).result() == min(
        2, numba.config.NUMBA_NUM_THREADS)
    assert inside_a_task() == numba.get_num_threads()   # the local scheduler: unchanged


def test_workers_start_numba_on_the_fork_safe_layer():
    """A fresh worker process asks Numba for its thread count before loading a kernel,
    which starts Numba's threads: on the layer batchdiff chooses, not OpenMP's default."""
    import numba
    plan = dask_arrays._Plan("grad", 0, (0,), None, "auto", "auto", None, None, None)

    def first_task():
        with dask_arrays._kernel_threads(plan, (np.ones(1),)):
            return numba.threading_layer(), numba.config.THREADING_LAYER
    cluster, client = _cluster(n_workers=1, threads_per_worker=1, processes=True)
    try:
        layer, chosen = client.submit(first_task, pure=False).result()
    finally:
        client.close()
        cluster.close()
    assert chosen == "forksafe" and layer in ("tbb", "workqueue")


# -- arguments ---------------------------------------------------------------------------------

def test_shared_arguments_in_axes_and_numpy_mixed_in(processes):
    rng = np.random.default_rng(4)
    loss = lambda x, w, s: np.sum(w * x ** 2) * s                     # noqa: E731
    X = rng.random((3, 7)).astype(np.float32)                         # points along axis 1
    w = rng.random(3).astype(np.float32)
    g = bd.grad(loss, in_axes=(1, None, None), backend="numpy")
    got = g(da.from_array(X, chunks=(2, RAGGED)), da.from_array(w, chunks=1), 0.5)
    assert got.chunks == (RAGGED, (3,)) and got.dtype == np.float32  # 0.5 stays weak
    assert_same(compute(got, processes), g(X, w, 0.5), np.float32)
    # a NumPy batched argument is cut into the Dask batch's chunks
    two = lambda x, y: np.sum(x * np.exp(-y))                          # noqa: E731
    Y = rng.random((7, 3))
    h = bd.grad(two, argnums=(0, 1), backend="numpy")
    got = h(chunked(X.T.astype(np.float64)), Y)
    assert all(r.chunks[0] == RAGGED for r in got)
    assert_same(compute(got, processes), h(X.T.astype(np.float64), Y), np.float64)


def test_tangents_and_cotangents_shared_numpy_or_chunked_otherwise(processes):
    rng = np.random.default_rng(5)
    F = lambda x: np.stack([x[0] * x[1], np.sin(x[2])])               # noqa: E731
    X = rng.random((7, 3))
    Xd = chunked(X)
    jvp, vjp = bd.jvp(F, backend="numpy"), bd.vjp(F, backend="numpy")
    V_shared, V = rng.random(3), rng.random((7, 3))
    U_shared, U = rng.random(2), rng.random((7, 2))
    lazy = [jvp(Xd, V_shared), jvp(Xd, V), jvp(Xd, da.from_array(V, chunks=(5, 1))),
            vjp(Xd, U_shared), vjp(Xd, da.from_array(U_shared, chunks=1)), vjp(Xd, U)]
    assert all(x.chunks[0] == RAGGED for r in lazy for x in leaves(r))
    expected = [jvp(X, V_shared), jvp(X, V), jvp(X, V), vjp(X, U_shared), vjp(X, U_shared),
                vjp(X, U)]
    for got, ref in zip(compute(lazy, processes), expected):
        assert_same(got, ref, np.float64)
    # only the tangent is a Dask array: the batch is one block
    assert jvp(X, da.from_array(V, chunks=2))[1].chunks[0] == (2, 2, 2, 1)
    assert bd.grad(lambda x, w: np.sum(w * x), in_axes=(0, None))(
        X, da.ones(3, chunks=1)).chunks[0] == (7,)


def test_empty_and_single_point_batches(threads):
    g = bd.value_and_grad(rosenbrock, backend="numba", method="replay")
    for B, chunks in ((0, (0,)), (1, (1,)), (2, (1, 1))):
        X = np.random.default_rng(B).random((B, 6))
        got = g(da.from_array(X, chunks=(chunks, 6)))
        assert_same(compute(got, threads), g(X), np.float64)


# -- lazy results ------------------------------------------------------------------------------

def _never(block):
    raise AssertionError("a block was computed")


def test_results_are_lazy_with_the_documented_metadata():
    X = da.ones((10, 3), chunks=((4, 6), (2, 1))).map_blocks(_never, dtype=np.float32)
    F = lambda x: np.stack([x[0] * x[1], x[2]])                       # noqa: E731
    H = bd.hessian(F)(X)                                              # nothing computed
    assert H.shape == (10, 2, 3, 3) and H.dtype == np.float32
    assert H.chunks == ((4, 6), (2,), (3,), (3,))                     # per-point axes whole
    assert type(H._meta) is np.ndarray and H._meta.ndim == 4
    names = {key_split(k) for k in H.__dask_graph__()}
    assert "batchdiff_hessian" in names and "batchdiff-plan" in names
    value, (gx, gy) = bd.value_and_grad(lambda x, y: np.sum(x * y), argnums=(0, 1))(X, X)
    assert value.shape == (10,) and gx.shape == gy.shape == (10, 3)
    assert key_split(value.name) == "batchdiff_value_and_grad_0"


def test_the_plan_is_one_key_and_pickles_without_function_or_compiled_code():
    big = np.arange(100_000.0)                                        # closed over by f
    f = lambda v: np.sum(v ** 2) * big[3]                             # noqa: E731
    H = bd.hessian(f, method="compiled")(da.ones((8, 4), chunks=2))
    graph = dict(H.__dask_graph__())
    plans = [k for k in graph if isinstance(k, str) and k.startswith("batchdiff-plan-")]
    assert len(plans) == 1                                            # shared by 4 tasks
    plan = graph[plans[0]].value
    data = pickle.dumps(plan)                                         # plain pickle: no lambda
    assert len(data) < 20_000 and b"numba" not in data and b"Dispatcher" not in data
    plan.runner                                                       # built on a worker
    assert len(pickle.dumps(plan)) == len(data)                       # and never shipped on


def test_a_transformed_function_pickles_without_its_traced_programs():
    """For users who ship a transform to workers themselves (needs api.Transformed's
    ``__getstate__``): the copy traces again, on its first call."""
    cloudpickle = pytest.importorskip("cloudpickle")
    g = bd.hessian(lambda x: np.sum(x ** 4), backend="numpy")
    X = np.ones((2, 50))
    g(X)
    copy = cloudpickle.loads(cloudpickle.dumps(g))
    assert g._programs and not copy._programs
    np.testing.assert_array_equal(copy(X), g(X))


def test_progress_bar_on_the_local_scheduler(capsys):
    from dask.diagnostics import ProgressBar
    H = bd.hessian(rosenbrock, backend="numpy")(da.ones((40, 6), chunks=4))
    with ProgressBar():
        H.sum().compute(scheduler="threads")
    assert "100%" in capsys.readouterr().out


# -- sparse results ----------------------------------------------------------------------------

def test_sparse_results_are_a_pattern_and_lazy_values(processes):
    X = np.random.default_rng(6).uniform(-2, 2, (7, 6))
    lorenz = CASES[1][1]
    for g in (bd.jacobian(lorenz, sparse=True, backend="numpy"),
              bd.hessian(rosenbrock, sparse=True, triangle="upper", backend="numpy")):
        ref = g(X)
        got = g(chunked(X))
        assert isinstance(got, dask_arrays.DaskSparseResult)
        assert got.pattern == ref.pattern and got.values.chunks == (RAGGED, (ref.nnz,))
        assert got.shape == ref.shape and len(got) == 7 and got.dtype == np.float64
        assert repr(got).startswith(f"<DaskSparseResult: 7 points of {ref.matrix_shape[0]}x")
        mem = got.compute(scheduler=processes)
        assert isinstance(mem, bd.SparseResult) and mem.pattern == ref.pattern
        np.testing.assert_allclose(mem.values, ref.values, rtol=1e-13)
        dense = got.to_dense()
        assert isinstance(dense, da.Array) and dense.chunks[0] == RAGGED
        np.testing.assert_allclose(compute(dense, processes), ref.to_dense(), rtol=1e-13)
        with dask.config.set(scheduler=processes):
            np.testing.assert_allclose(got.to_scipy(-1).toarray(), ref.to_scipy(6).toarray())
            assert (got.block_diag() != ref.block_diag()).nnz == 0


# -- misuse --------------------------------------------------------------------------------------

def test_misuse_gets_the_in_memory_errors_or_a_clear_one():
    Xd, X = da.ones((6, 2), chunks=3), np.ones((6, 2))
    g = bd.grad(lambda v: v[0] * v[1])
    with pytest.raises(TypeError, match="out= cannot take Dask inputs"):
        g(Xd, out=np.empty((6, 2)))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        g(Xd[Xd[:, 0] > 0])
    with pytest.raises(TypeError, match="takes Dask arrays"):
        g(dask.delayed(X))
    hvp = bd.hvp(lambda v: v[0] * v[1])
    with pytest.raises(ShapeError) as in_memory:
        hvp(X, np.ones((6, 3)))
    with pytest.raises(ShapeError) as on_dask:
        hvp(Xd, da.ones((6, 3), chunks=3))
    assert str(on_dask.value) == str(in_memory.value)
    with pytest.raises(ShapeError, match="disagree on the number of points"):
        bd.grad(lambda x, y: np.sum(x * y))(Xd, da.ones((5, 2)))


# -- the demo ------------------------------------------------------------------------------------

def test_demo_through_dask_on_a_running_scheduler(processes, capsys):
    assert demo.main(["--points", "64", "--dask", processes.scheduler.address]) == 0
    out = capsys.readouterr().out
    assert "through Dask" in out and out.count(" OK\n") == len(demo.problems())


def test_demo_through_dask_reports_a_wrong_oracle(monkeypatch, capsys):
    p = demo.problems()[2]
    broken = [demo.Problem(p.name, p.transform, p.f, lambda X: p.oracle(X) + 1.0, p.sample)]
    monkeypatch.setattr(demo, "problems", lambda: broken)
    assert demo.main(["--points", "16", "--dask", "threads"]) == 1
    assert "FAIL" in capsys.readouterr().out


# -- kernel caches on the workers ----------------------------------------------------------------

def _kernel_cache_stats():
    """Per compiled kernel module loaded in this process: (cache hits, compilations)."""
    stats = {}
    for name, module in list(sys.modules.items()):
        if name.startswith(numba_compiled.PREFIX + "_"):
            fns = [module.run_serial]
            stats[name] = tuple(sum(sum(getattr(fn.stats, counter).values()) for fn in fns)
                                for counter in ("cache_hits", "cache_misses"))
    return stats


def test_warm_workers_load_a_compiled_kernel_without_compiling(processes):
    g = bd.hessian(rosenbrock, method="compiled")
    X = np.random.default_rng(7).uniform(-2, 2, (64, 6))
    expected = g(X)                              # compiles here once: the cache is warm
    assert_same(compute(g(chunked(X, (32, 32))), processes), expected, np.float64)
    for stats in processes.run(_kernel_cache_stats).values():
        assert stats and all(misses == 0 for _, misses in stats.values())
        assert sum(hits for hits, _ in stats.values()) > 0


# -- a worker that dies ------------------------------------------------------------------------

def _slowly(block):
    time.sleep(0.05)
    return block


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_result_is_right(processes):
    X = np.random.default_rng(8).uniform(-2, 2, (400, 6))
    g = bd.hessian(rosenbrock, backend="numba", method="replay")
    future = processes.compute(g(chunked(X, (10,) * 40)).map_blocks(_slowly).sum(axis=0))
    while not any(processes.processing().values()):
        time.sleep(0.01)
    time.sleep(0.3)                               # some blocks done, on both workers
    assert not future.done()
    victim = sorted(processes.run(os.getpid).items())[0][1]
    os.kill(victim, signal.SIGKILL)
    np.testing.assert_allclose(future.result(timeout=120), g(X).sum(axis=0), rtol=1e-12)
    processes.wait_for_workers(2, timeout=60)
    assert victim not in processes.run(os.getpid).values()


# -- GPU -------------------------------------------------------------------------------------------

@pytest.mark.skipif(not cupy_exec.available(), reason="needs CuPy and a CUDA device")
def test_cupy_backed_dask_arrays_run_the_cupy_back_end(threads):
    import cupy
    X = np.random.default_rng(9).uniform(-2, 2, (5000, 6))
    H = bd.hessian(rosenbrock)(da.from_array(cupy.asarray(X), chunks=(2000, 6)))
    assert isinstance(H._meta, cupy.ndarray)
    got = compute(H, threads)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), bd.hessian(rosenbrock, backend="numpy")(X),
                               rtol=1e-10, atol=1e-10)
