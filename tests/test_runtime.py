"""The Numba runtime survives what real programs do to it.

Processes forked, spawned and served after a parallel call, threads calling at once,
several processes compiling on one empty cache, a compiler killed with ``kill -9``, a
cache directory that cannot be used, and cache entries that are corrupt. Most cases
run in a fresh Python process (what was loaded here must not hide what a new process
does), each with a time limit, so that a hang fails instead of stopping the suite.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import batchdiff as bd
from batchdiff.kernels import cache, numba_compiled, numba_exec, numba_replay

METHODS = ("replay", "compiled", "auto")


def _python(script, env=None, timeout=120, **kwargs):
    """Run ``script`` in a fresh interpreter (a hang fails after ``timeout`` seconds)."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                         env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                         timeout=timeout, **kwargs)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture
def cache_with_replay(tmp_path, monkeypatch):
    """An empty kernel cache but for the replay interpreter, copied from the default
    cache (compiled there first if need be), so that no test compiles it again."""
    monkeypatch.delenv("BATCHDIFF_CACHE_DIR", raising=False)
    source_dir = cache.cache_dir()
    name = numba_replay.module_name()
    dtypes = ("float64", "float32")
    if not all(cache.is_ready(name, dtype) for dtype in dtypes):
        _python(f"""
            from batchdiff.kernels import numba_replay
            for dtype in {dtypes!r}:
                numba_replay.interpreter(dtype)
        """, timeout=300)
    target = tmp_path / "cache"
    (target / "__pycache__").mkdir(parents=True)
    for path in glob.glob(os.path.join(source_dir, name + ".*")):
        if not path.endswith(".lock"):
            shutil.copy2(path, target)
    for path in glob.glob(os.path.join(source_dir, "__pycache__", name + ".*")):
        shutil.copy2(path, target / "__pycache__")   # copy2: Numba checks the source's mtime
    monkeypatch.setenv("BATCHDIFF_CACHE_DIR", str(target))
    return target


def _compile_log(path):
    """{module: set of pids that compiled some of its functions} from BATCHDIFF_COMPILE_LOG."""
    compilers = {}
    if os.path.exists(path):
        for line in open(path):
            pid, module, _ = line.split()
            compilers.setdefault(module, set()).add(pid)
    return compilers


# -- processes and threads after a parallel call --------------------------------------

POOLS = f"""
    import multiprocessing as mp, threading, numba, numpy as np, batchdiff as bd
    from batchdiff.kernels.numba_exec import PARALLEL_MIN_POINTS
    f = lambda v: np.sum(np.sin(v) * v[::-1]) + v[0] * v[1]
    METHODS = {METHODS!r}

    def check(seed):
        X = np.random.default_rng(seed).random((PARALLEL_MIN_POINTS + 1000, 3))
        ref = bd.grad(f, backend="numpy")(X)
        for method in METHODS:
            np.testing.assert_allclose(bd.grad(f, method=method)(X), ref, rtol=1e-12)
        return seed

    if __name__ == "__main__":
        check(0)                           # the parent has run parallel kernels
        print(numba.threading_layer())
        for start in ("fork", "spawn", "forkserver"):
            with mp.get_context(start).Pool(2) as pool:
                assert pool.map(check, range(4)) == list(range(4)), start
        errors = []
        def work(seed):
            try:
                check(seed)
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        print("ok")
"""


def test_pools_and_threads_after_a_parallel_call(tmp_path):
    """fork, spawn and forkserver pools made after a parallel batch, and 4 threads at
    once, on every method: no hang (GNU OpenMP kills forked children), no abort."""
    script = tmp_path / "pools.py"       # spawn and forkserver import the main module
    script.write_text(textwrap.dedent(POOLS))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    layer, verdict = run.stdout.split()
    assert layer in ("workqueue", "tbb") and verdict == "ok"
    assert "Terminating" not in run.stderr


def test_a_threading_layer_the_user_chose_is_kept():
    out = _python(f"""
        import numba, numpy as np, batchdiff as bd
        from batchdiff.kernels.numba_exec import PARALLEL_MIN_POINTS
        bd.grad(lambda v: np.sum(v * v), method="replay")(np.ones((PARALLEL_MIN_POINTS, 2)))
        print(numba.threading_layer())
    """, env={"NUMBA_THREADING_LAYER": "omp"})
    assert out.split() == ["omp"]


def test_serial_or_parallel_follows_the_timed_work(monkeypatch):
    """Untimed, a tape's batch runs in parallel from PARALLEL_MIN_POINTS points and
    serially below (which times it); timed, in parallel when its serial time would be at
    least PARALLEL_MIN_SECONDS. Every result is right either way."""
    from batchdiff.kernels import numba_exec, numba_replay
    parallel = []
    real = numba_replay.run
    monkeypatch.setattr(numba_replay, "run",
                        lambda *a, **k: parallel.append(a[5]) or real(*a, **k))
    g = bd.grad(lambda v: v[0] * v[1] + v[1], method="replay")
    rng = np.random.default_rng(9)
    big = rng.random((numba_exec.PARALLEL_MIN_POINTS, 2))
    small = rng.random((numba_exec.TIMED_MIN_POINTS * 4, 2))

    def check(X):
        np.testing.assert_allclose(g(X), np.stack([X[:, 1], X[:, 0] + 1], axis=1))
        return parallel[-1]
    assert check(big) is True                 # untimed, large: parallel
    monkeypatch.setattr(numba_exec, "PARALLEL_MIN_SECONDS", 1e9)
    assert check(small) is False              # serial: its work never repays the start
    monkeypatch.setattr(numba_exec, "PARALLEL_MIN_SECONDS", 0.0)
    assert check(small) is True
    h = bd.grad(lambda v: v[0] * v[1] - v[1], method="replay")
    h(small)                                  # untimed, small: serial
    assert parallel[-1] is False


def test_a_long_tape_is_compiled_once_replay_has_spent_its_compile_time(monkeypatch):
    """Beyond COMPILE_MAX_OPS, auto compiles a tape's kernel once replay has run it for
    as long as the compile would take (numba_compiled.compile_seconds), not before."""
    from batchdiff.kernels import numba_compiled, numba_exec
    monkeypatch.setattr(numba_exec, "COMPILE_MAX_OPS", 0)         # every tape is long
    monkeypatch.setattr(numba_exec.warmup, "enabled", lambda: True)
    monkeypatch.setattr(numba_exec.warmup, "start", lambda name, dtype, source: None)
    c = 1 + time.time_ns() % 10**6 / 10**7      # a tape no earlier run compiled
    f = lambda v: v[0] * v[1] + np.sin(v[0]) - v[1] ** 3 * c
    X = np.random.default_rng(4).random((5000, 2))
    for _ in range(2):                                           # load, then time replay
        bd.grad(f, method="replay")(X)
    g = bd.grad(f)
    key = (g.tape(X), "float64", (("x", 0), ("x", 1)), (2,))
    monkeypatch.setattr(numba_compiled, "COMPILE_SECONDS_PER_OP", 1e6)
    for _ in range(3):
        np.testing.assert_allclose(g(X), bd.grad(f, backend="numpy")(X), rtol=1e-12)
    assert not numba_exec.entry(key).wanted
    monkeypatch.setattr(numba_compiled, "COMPILE_SECONDS_PER_OP", 1e-12)
    g(X)
    assert numba_exec.entry(key).wanted


# -- one compile across processes -----------------------------------------------------

COMPILE_ONE = """
    import numpy as np, batchdiff as bd
    X = np.random.default_rng(5).random((300, 4))
    got = bd.hessian(lambda v: np.sum(np.cos(v) * v[::-1]), method="{method}")(X)
    ref = bd.hessian(lambda v: np.sum(np.cos(v) * v[::-1]), backend="numpy")(X)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
"""


def _start_together(script, count, env):
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                              env=dict(os.environ, **env), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(count)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


@pytest.mark.parametrize("method,prefix", [
    ("compiled", numba_compiled.PREFIX),
    pytest.param("replay", numba_replay.PREFIX, marks=pytest.mark.slow)])   # ~8 s compile
def test_processes_on_an_empty_cache_compile_each_kernel_once(tmp_path, method, prefix):
    log = tmp_path / "compiles.log"
    env = {"BATCHDIFF_CACHE_DIR": str(tmp_path / "cache"), "BATCHDIFF_COMPILE_LOG": str(log)}
    _start_together(COMPILE_ONE.format(method=method), 3, env)
    compilers = _compile_log(log)
    assert [m for m in compilers if m.startswith(prefix)], compilers
    assert all(len(pids) == 1 for pids in compilers.values()), compilers


def test_background_compiles_of_several_processes_are_one(cache_with_replay, tmp_path):
    """auto: each process asks for the kernel in the background; one process compiles it."""
    log = tmp_path / "compiles.log"
    script = """
        import numpy as np, batchdiff as bd
        from batchdiff.kernels import warmup
        X = np.random.default_rng(6).random((200_000, 2))
        g = bd.grad(lambda v: v[0] * np.exp(-v[1] * v[0]))
        g(X)                               # replay; 200k points: kernel wanted
        warmup.wait()
    """
    _start_together(script, 3, {"BATCHDIFF_COMPILE_LOG": str(log),
                                "BATCHDIFF_BACKGROUND_COMPILE": "1"})
    compilers = _compile_log(log)
    kernels = [m for m in compilers if m.startswith(numba_compiled.PREFIX)]
    assert len(kernels) == 1 and len(compilers[kernels[0]]) == 1, compilers
    assert not [m for m in compilers if m.startswith(numba_replay.PREFIX)], compilers


def test_a_killed_compiler_does_not_hold_others(tmp_path, monkeypatch):
    """The compile lock of a process killed with kill -9 is free at once."""
    monkeypatch.setenv("BATCHDIFF_CACHE_DIR", str(tmp_path))
    source = "VALUE = 42\n"
    name = cache.module_name(source, "bdtest")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from batchdiff.kernels import cache
        cache.load({source!r}, "bdtest", "float64", lambda m, d: time.sleep(120))
    """)], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not cache.compiling_elsewhere(name):      # it is 'compiling'
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        start = time.monotonic()
        module = cache.load(source, "bdtest", "float64", lambda m, d: None)
        assert module.VALUE == 42 and time.monotonic() - start < 10
        assert cache.is_ready(name, "float64")
    finally:
        holder.kill()
        sys.modules.pop(name, None)


# -- auto never waits, even when the disk cache lies ------------------------------------

@pytest.mark.parametrize("damage", ["missing", pytest.param("corrupt", marks=pytest.mark.slow)])
def test_auto_does_not_wait_when_numba_files_are_gone(cache_with_replay, damage):
    """A '.ready' marker whose Numba files are missing or corrupt: auto serves the call
    with replay, compiles nothing itself, and the kernel is compiled in the background."""
    script = """
        import numpy as np, batchdiff as bd
        X = np.random.default_rng(8).random((5000, 3))
        f = lambda v: np.sinh(v) * v[0]
        for _ in range(2):           # auto races replay, then the compiled kernel
            np.testing.assert_allclose(bd.jacobian(f, method="{m}")(X),
                                       bd.jacobian(f, backend="numpy")(X))
    """
    _python(script.format(m="compiled"))
    files = glob.glob(str(cache_with_replay / "__pycache__" / f"{numba_compiled.PREFIX}_*"))
    assert files
    for path in files:
        if damage == "missing":
            os.unlink(path)
        else:
            open(path, "wb").write(b"\x80garbage")
    out = _python(script.format(m="auto") + """
        from batchdiff.kernels import cache, numba_exec, warmup
        print(sorted(cache._compiles.values()), warmup._processes and "started")
        warmup.wait()
    """, env={"BATCHDIFF_BACKGROUND_COMPILE": "1"})
    assert out.split() == ["[]", "started"]        # nothing compiled in the calling process
    assert len(glob.glob(str(cache_with_replay / f"{numba_compiled.PREFIX}_*.ready"))) == 1
    _python(script.format(m="auto") + """
        from batchdiff.kernels import cache, numba_compiled
        assert numba_compiled._kernels and not cache._compiles, cache._compiles
    """, env={"BATCHDIFF_BACKGROUND_COMPILE": "1"})


def test_read_only_inputs_use_the_compiled_signature():
    """Numba types a read-only array apart; the inputs are copied rather than compile."""
    X = np.random.default_rng(9).random((50, 3))
    g = bd.grad(lambda v: np.sum(v ** 3), method="replay")
    g(X)
    before = cache.compiles(numba_replay.module_name())
    X.flags.writeable = False
    np.testing.assert_allclose(g(X), 3 * X ** 2, rtol=1e-12)
    assert cache.compiles(numba_replay.module_name()) == before


# -- an unusable cache directory ------------------------------------------------------

UNUSABLE = """
    import errno, os, warnings, numpy as np, batchdiff as bd
    {setup}
    f = lambda v: np.sum(np.sin(v) * v)
    X = np.random.default_rng(0).random((3000, 3))
    ref = bd.grad(f, backend="numpy")(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            np.testing.assert_allclose(bd.grad(f)(X), ref, rtol=1e-12)
    assert [w.category for w in caught] == [bd.CacheWarning], caught
    print(caught[0].message)
    for method in ("compiled", "replay"):
        try:
            bd.grad(f, method=method)(X)
            raise AssertionError(method + " ran without its cache")
        except bd.CacheError as e:
            print(e)
"""

FAIL_WRITES = """
    _replace = os.replace
    def replace(src, dst):
        raise OSError(errno.{code}, os.strerror(errno.{code}))
    os.replace = replace
"""


@pytest.mark.parametrize("background", ["0", "1"])
@pytest.mark.parametrize("case", ["file", "under_file", "EROFS", "ENOSPC"])
def test_an_unusable_cache_dir_warns_once_in_auto_and_raises_otherwise(tmp_path, case,
                                                                       background):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    directory = {"file": blocker, "under_file": blocker / "cache"}.get(case, tmp_path / "c")
    setup = FAIL_WRITES.format(code=case) if case.startswith("E") else ""
    out = _python(UNUSABLE.format(setup=textwrap.indent(textwrap.dedent(setup), "    ")),
                  env={"BATCHDIFF_CACHE_DIR": str(directory),
                       "BATCHDIFF_BACKGROUND_COMPILE": background})
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "BATCHDIFF_CACHE_DIR" in line and str(directory) in line
        assert {"file": "a file is in the way", "under_file": "a file is in the way",
                "EROFS": "Read-only file system", "ENOSPC": "No space left"}[case] in line
    assert "auto" in lines[0]


# -- corrupt cache entries ------------------------------------------------------------

def _fresh_kernel(seed):
    """A tape no other test compiled, with its kernel source."""
    c = float(seed) + 0.125
    f = lambda v: v[0] * np.sin(c * v[1])  # noqa: E731
    x = np.random.default_rng(seed).random((10, 2))
    tape = bd.grad(f).tape(x)
    sources = (("x", 0), ("x", 1))
    return f, x, tape, sources, numba_compiled.print_kernel(tape, np.float64, sources)


@pytest.mark.parametrize("damage", [b"\xff\xfe\x00 not UTF-8", "truncated"])
def test_a_corrupt_source_file_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("BATCHDIFF_CACHE_DIR", str(tmp_path))
    f, x, tape, sources, source = _fresh_kernel(11 if damage == "truncated" else 12)
    name = cache.store(source, numba_compiled.PREFIX)
    path = tmp_path / (name + ".py")
    path.write_bytes(source[: len(source) // 2].encode() if damage == "truncated" else damage)
    try:
        module = numba_compiled.kernel_module(tape, np.float64, sources, (2,))
        out = np.empty((10, 2))
        numba_compiled.run(module, x, np.empty(0), [out], parallel=False)
        np.testing.assert_allclose(out, bd.grad(f, backend="numpy")(x), rtol=1e-12)
        assert path.read_text() == source
    finally:
        numba_compiled._kernels.clear()
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_a_corrupt_source_file_of_a_ready_kernel_is_rebuilt_in_a_new_process(
        cache_with_replay):
    """Non-UTF-8 bytes in a cached .py crashed every later run."""
    script = """
        import numpy as np, batchdiff as bd
        X = np.ones((4, 3))
        print(bd.grad(lambda v: np.sum(v ** 3) + v[1], method="{m}")(X)[0, 1])
    """
    assert float(_python(script.format(m="compiled"))) == 4.0
    for path in glob.glob(str(cache_with_replay / f"{numba_compiled.PREFIX}_*.py")):
        open(path, "wb").write(b"\xff\xfe\xfa garbage")
    for method in ("compiled", "auto"):
        assert float(_python(script.format(m=method))) == 4.0


def test_corrupt_numba_cache_files_are_rebuilt(tmp_path):
    """Garbage in Numba's cache files next to a kernel is rebuilt, not fatal."""
    script = """
        import glob, os, numpy as np, batchdiff as bd
        print(bd.grad(lambda v: np.sum(v ** 3), method="compiled")(np.ones((4, 3)))[0, 0])
    """
    env = {"BATCHDIFF_CACHE_DIR": str(tmp_path)}
    assert float(_python(script, env)) == 3.0
    for path in glob.glob(str(tmp_path / "__pycache__" / f"{numba_compiled.PREFIX}_*")):
        open(path, "wb").write(b"garbage")
    assert float(_python(script, env)) == 3.0


def test_a_marker_without_machine_code_is_not_trusted(tmp_path, monkeypatch):
    """A marker whose kernel was never compiled: not ready for auto, compiled otherwise."""
    monkeypatch.setenv("BATCHDIFF_CACHE_DIR", str(tmp_path))
    f, x, tape, sources, source = _fresh_kernel(13)
    name = cache.module_name(source, numba_compiled.PREFIX)
    cache.mark_ready(name, np.float64)
    try:
        with pytest.raises(cache.NotReady):
            numba_compiled.kernel_module(tape, np.float64, sources, (2,), wait=False)
        assert not cache.is_ready(name, np.float64)
        module = numba_compiled.kernel_module(tape, np.float64, sources, (2,))
        assert cache.is_ready(name, np.float64) and module.__name__ == name
    finally:
        numba_compiled._kernels.clear()
        sys.modules.pop(name, None)


def test_a_failing_background_compile_is_not_retried_for_ever(tmp_path, monkeypatch):
    from batchdiff.kernels import warmup
    monkeypatch.setenv("BATCHDIFF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "executable", "false")   # every compiler exits with status 1
    key = ("bdk_" + "0" * 24, "float64")
    try:
        for _ in range(5):
            warmup.start(*key, lambda: "X = 1\n")
            warmup.wait()
        assert warmup._failures[key] == warmup.ATTEMPTS
    finally:
        warmup._processes.pop(key, None)
        warmup._failures.pop(key, None)


def test_auto_falls_back_when_loading_fails(monkeypatch):
    """A kernel that turns out not ready at load leaves auto with the next executor."""
    X = np.random.default_rng(14).random((40, 2))
    f = lambda v: v[0] ** 2 * v[1]  # noqa: E731
    monkeypatch.setenv("BATCHDIFF_BACKGROUND_COMPILE", "1")
    monkeypatch.setattr(numba_exec, "_choose", lambda *a, **k: "replay")
    tries = []

    def not_ready(*args, **kwargs):
        tries.append(kwargs["wait"])
        raise cache.NotReady("bdreplay")
    monkeypatch.setattr(numba_replay, "run", not_ready)
    np.testing.assert_allclose(bd.grad(f)(X), bd.grad(f, backend="numpy")(X), rtol=1e-12)
    assert tries == [False] * 3          # never waits; after three, the NumPy interpreter


def _weighted_sines(x, w):
    return np.sum(w * np.sin(x))


def test_repeated_calls_of_one_signature_take_the_short_path():
    """A call with the arguments' types, shapes and dtypes of the last one reuses what
    that call checked and laid out; any other call takes the full path, and its results
    are right too."""
    import pickle
    g = bd.grad(_weighted_sines, in_axes=(0, None))
    rng = np.random.default_rng(21)
    X, w = rng.random((6, 3)), np.array([1.0, 2.0, 3.0])
    assert g._fast is None
    np.testing.assert_allclose(g(X, w), w * np.cos(X), rtol=1e-14)
    fast = g._fast
    assert fast is not None and fast.takes((X, w)) and not fast.takes((X[:2], w))
    assert not fast.takes((X.astype(np.float32), w)) and not fast.takes((X.tolist(), w))
    for _ in range(3):                         # new values, the same signature
        Y, v = rng.random((6, 3)), rng.random(3)
        np.testing.assert_allclose(g(Y, v), v * np.cos(Y), rtol=1e-14)
    assert g._fast is fast
    np.testing.assert_allclose(g(X[:2], w), w * np.cos(X[:2]), rtol=1e-14)   # full path
    out = np.empty_like(X)
    for _ in range(3):                         # a reused buffer: the short path too
        Y = rng.random((6, 3))
        assert g(Y, w, out=out) is out
        np.testing.assert_allclose(out, w * np.cos(Y), rtol=1e-14)
    assert g._fast.takes((X, w), out) and not g._fast.takes((X, w), np.empty_like(X))
    with pytest.raises(ValueError, match="overlap|share"):
        g(out, w, out=out)                     # the full path refuses it, as always
    np.testing.assert_allclose(g(X.astype(np.float32), w.astype(np.float32)),
                               w * np.cos(X), rtol=1e-6)
    copy = pickle.loads(pickle.dumps(g))       # the short path stays in this process
    assert copy._fast is None
    np.testing.assert_allclose(copy(X, w), w * np.cos(X), rtol=1e-14)
    hv = bd.hvp(lambda x: np.sum(x ** 3))     # tangents among the arguments
    for V in (rng.random((6, 3)), rng.random((6, 3)), rng.random(3)):
        np.testing.assert_allclose(hv(X, V), 6 * X * V, rtol=1e-14)
    assert hv._fast.takes((X, np.ones(3))) and not hv._fast.takes((X, np.ones((6, 3))))
    sparse = bd.hessian(lambda x: np.sum(x ** 3), sparse=True)
    for _ in range(2):
        H = sparse(X)
        np.testing.assert_allclose(H.to_dense(), np.stack([np.diag(6 * x) for x in X]))


def test_a_short_tape_called_often_on_few_points_is_compiled(monkeypatch):
    """SciPy's solvers call a Jacobian on one point thousands of times: the compiled
    kernel's call costs less than replay's, so after COMPILE_MIN_CALLS calls auto
    wants it, whatever the points."""
    from batchdiff.kernels import numba_exec
    monkeypatch.setattr(numba_exec, "COMPILE_MIN_CALLS", 5)
    c = 1 + time.time_ns() % 10**6 / 10**7      # a tape no earlier run compiled
    f = lambda v: np.stack([v[0] * v[1] * c, np.sin(v[1])])  # noqa: E731
    J = bd.jacobian(f)
    y = np.array([[0.3, 0.7]])
    key = (J.tape(y), "float64", (("x", 0), ("x", 1)), (4,))
    for _ in range(4):
        J(y)
    assert not numba_exec.entry(key).wanted
    J(y)
    assert numba_exec.entry(key).wanted
    np.testing.assert_allclose(J(y)[0], [[0.7 * c, 0.3 * c], [0.0, np.cos(0.7)]], rtol=1e-14)


def test_a_long_compile_says_what_and_how_long_once(monkeypatch, caplog):
    """method="compiled" waits for its compile: a CompileWarning (and an INFO record)
    says what it compiles and about how long, once; a background compile logs at INFO
    what answers meanwhile."""
    import logging
    import warnings
    monkeypatch.setattr(cache, "LONG_COMPILE_SECONDS", 0.0)
    c = 1 + time.time_ns() % 10**6 / 10**7      # a tape no earlier run compiled
    f = lambda v: np.sum(np.cos(v * c))  # noqa: E731
    X = np.random.default_rng(2).random((4, 3))
    g = bd.grad(f, method="compiled")
    with caplog.at_level(logging.INFO, logger="batchdiff"):
        with pytest.warns(bd.CompileWarning, match=r"kernel of a tape of \d+ instructions: "
                          r"estimated \d+ s.*this call waits for it \(BATCHDIFF_BACKGROUND_"
                          r"COMPILE=0 compiles in the calling process\)"):
            np.testing.assert_allclose(g(X), -c * np.sin(X * c), rtol=1e-13)
    assert any("the call waits for it" in r.getMessage() for r in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bd.CompileWarning)
        bd.grad(f, method="compiled")(X)           # loaded: nothing to say
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="batchdiff"):
        cache.announce_compile("bdk_" + "1" * 24, "the kernel of a tape of 9 instructions",
                               12.0, meanwhile="replay")
        cache.announce_compile("bdk_" + "1" * 24, "the kernel of a tape of 9 instructions",
                               12.0, meanwhile="replay")
    said = [r.getMessage() for r in caplog.records]
    assert said == ["batchdiff is compiling the kernel of a tape of 9 instructions: estimated "
                    "12 s on a 2-core machine, in the background; replay answers meanwhile"]
