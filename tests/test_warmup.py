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
    seen += [step() for _ in range(4)]  # replay; 200k points seen: kernel compiling
    warmup.wait()
    seen += [step() for _ in range(7)]  # both ready: 3 calls each, then the faster stays
    race = numba_exec._races[(tape, "float64", src, (36,))]
    print(" ".join(seen), race.winner)
""")


@pytest.mark.slow
def test_auto_tiers_with_background_compiles(tmp_path):
    env = dict(os.environ, BATCHDIFF_CACHE_DIR=str(tmp_path), BATCHDIFF_BACKGROUND_COMPILE="1")
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    *seen, winner = run.stdout.split()
    assert seen[0] == "numpy"
    assert seen[1] == "replay"
    assert "compiled" in seen[5:-1]
    assert winner in ("replay", "compiled") and seen[-1] == winner
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".ready"))


def test_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    import numpy as np
    import batchdiff as bd
    from batchdiff.kernels import cache, numba_compiled
    monkeypatch.setenv("BATCHDIFF_CACHE_DIR", str(tmp_path))
    f = lambda v: v[0] * np.sin(v[1])  # noqa: E731
    x = np.random.default_rng(1).random((10, 2))
    tape = bd.grad(f).tape(x)
    sources = (("x", 0), ("x", 1))
    source = numba_compiled.print_kernel(tape, np.float64, sources)
    name = cache.store(source, numba_compiled.PREFIX)
    with open(os.path.join(str(tmp_path), name + ".py"), "w") as fh:
        fh.write(source[: len(source) // 2])          # a truncated file
    module = cache.load(source, numba_compiled.PREFIX)
    out = np.empty((10, 2))
    numba_compiled.run(module, x, np.empty(0), [out], parallel=False)
    np.testing.assert_allclose(out, bd.grad(f, backend="numpy")(x), rtol=1e-12)
    sys.modules.pop(name, None)


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


def test_corrupt_numba_cache_files_are_rebuilt(tmp_path):
    """Garbage in Numba's cache files next to a kernel is rebuilt, not fatal."""
    script = textwrap.dedent("""
        import glob, os, numpy as np, batchdiff as bd
        f = lambda v: np.sum(v ** 3)
        X = np.ones((4, 3))
        bd.grad(f, method="compiled")(X)
        for p in glob.glob(os.path.join(os.environ["BATCHDIFF_CACHE_DIR"], "__pycache__", "bdk_*")):
            open(p, "wb").write(b"garbage")
    """)
    env = dict(os.environ, BATCHDIFF_CACHE_DIR=str(tmp_path))
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import numpy as np, batchdiff as bd
        print(bd.grad(lambda v: np.sum(v ** 3), method="compiled")(np.ones((4, 3)))[0, 0])
    """)], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert float(again.stdout) == 3.0
