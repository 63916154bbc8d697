"""method="auto" never waits for a compile: NumPy first, then replay, then compiled."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np, batchdiff as bd
    from batchdiff.kernels import numba_exec, warmup
    rosen = lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    X = np.random.default_rng(0).random((50_000, 6))
    h, ref = bd.hessian(rosen), bd.hessian(rosen, backend="numpy")(X)
    tape = h.tape(X)
    src = tuple(("x", i) for i in range(6))
    def step():
        how = numba_exec.choose(tape, 0, np.dtype("float64"), src)
        np.testing.assert_allclose(h(X), ref, rtol=1e-12)
        return how
    seen = [step()]                     # nothing compiled: NumPy, replay compiling
    warmup.wait()
    # replay compiled on disk, nothing loaded: NumPy once more, replay loads meanwhile;
    # then replay; 200k points seen: kernel compiling
    seen += [step() for _ in range(4)]
    warmup.wait()
    seen += [step() for _ in range(7)]  # both ready: 3 calls each, then the faster stays
    race = numba_exec.entry((tape, "float64", src, (36,))).race
    print(" ".join(seen), race.winner)
""")


@pytest.mark.slow
def test_auto_tiers_with_background_compiles(tmp_path):
    env = dict(os.environ, BATCHDIFF_CACHE_DIR=str(tmp_path), BATCHDIFF_BACKGROUND_COMPILE="1")
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    *seen, winner = run.stdout.split()
    assert seen[:3] == ["numpy", "numpy", "replay"]
    assert "compiled" in seen[5:-1]
    assert winner in ("replay", "compiled") and seen[-1] == winner
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".ready"))


CONCURRENT = textwrap.dedent("""
    import numpy as np, batchdiff as bd
    f = lambda v: np.sum(np.tanh(v) * v[::-1]) + v[0] ** 3
    X = np.random.default_rng(2).random((3000, 5))
    got = bd.hessian(f, method="compiled")(X)
    np.testing.assert_allclose(got, bd.hessian(f, backend="numpy")(X), rtol=1e-12)
    print("ok")
""")


@pytest.mark.slow
def test_two_processes_compiling_the_same_kernel(tmp_path):
    env = dict(os.environ, BATCHDIFF_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and out.strip() == "ok", err


def test_threads_share_kernels():
    import threading
    import numpy as np
    import batchdiff as bd
    f = lambda v: np.sum(np.exp(-v * v))  # noqa: E731
    X = np.random.default_rng(3).random((5000, 4))
    ref = bd.grad(f, backend="numpy")(X)
    errors = []

    def work(method):
        try:
            for _ in range(3):
                np.testing.assert_allclose(bd.grad(f, method=method)(X), ref, rtol=1e-12)
        except Exception as e:   # noqa: BLE001  (reported below)
            errors.append(e)
    threads = [threading.Thread(target=work, args=(m,)) for m in ("compiled", "replay") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


PRELOAD = textwrap.dedent("""
    import sys, numpy as np, batchdiff as bd
    from batchdiff.kernels import numba_exec, numba_replay, warmup
    f = lambda v: np.sum(np.sin(v) * v[::-1])
    X = np.random.default_rng(3).random((1000, 4))
    warmup.LOAD_SECONDS = float(sys.argv[1])
    ref = bd.grad(f, backend="numpy")(X)
    ran = []
    numba_exec.evaluate = lambda *a, **k: ran.append("numpy") or bd.interpreter.evaluate(*a, **k)
    np.testing.assert_allclose(bd.grad(f)(X), ref, rtol=1e-12)
    warmup.wait()
    print(ran[0] if ran else "numba", numba_replay.is_loaded(np.float64))
""")


@pytest.mark.slow
def test_a_fresh_process_runs_small_calls_on_numpy_while_the_kernels_load(tmp_path):
    """Warm cache, fresh process: a call NumPy finishes sooner than loading Numba's code
    runs there, and the interpreter loads after it; a call NumPy would take longer over
    (here: loading is free) loads it and runs it."""
    env = dict(os.environ, BATCHDIFF_CACHE_DIR=str(tmp_path), BATCHDIFF_BACKGROUND_COMPILE="1")
    subprocess.run([sys.executable, "-c", PRELOAD, "1"], env=env, check=True, timeout=600)
    subprocess.run([sys.executable, "-c", "from batchdiff.kernels import warmup; warmup.wait()"],
                   env=env, check=True, timeout=600)
    from batchdiff.kernels import numba_replay, warmup
    assert os.path.exists(os.path.join(tmp_path, numba_replay.module_name() + ".py"))

    def run(load_seconds):
        out = subprocess.run([sys.executable, "-c", PRELOAD, str(load_seconds)], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()
    assert run(warmup.LOAD_SECONDS) == ["numpy", "True"]
    assert run(0.0) == ["numba", "True"]


def test_preloads_run_one_at_a_time_and_a_failed_one_can_be_retried(monkeypatch):
    from batchdiff.kernels import warmup
    monkeypatch.setattr(warmup, "_loader", None)
    ran = []

    def fail():
        ran.append("fail")
        raise RuntimeError("not compiled after all")
    warmup.preload(fail)
    assert warmup.preloading()                        # prepared, not started
    warmup.preload(lambda: ran.append("ignored"))     # one at a time
    warmup.start_preload()
    warmup.wait_preload()
    assert not warmup.preloading()
    warmup.preload(lambda: ran.append("again"))
    warmup.wait_preload()                             # starts a prepared one, then joins
    assert ran == ["fail", "again"]
