"""The generated CUDA compiles, and, built as host C++, agrees with the reference interpreter.

Every case of the corpus with every transform that applies, in float64 and float32, is
printed into one translation unit per dtype (distinct name prefixes; every other kernel
cut into small segments so the segment path runs too), with kernels whose outputs go to
several leaves (value and gradient; a Hessian split unevenly, so that mirrored entries
land in different leaves) and kernels of the structural non-zeros only (what a sparse
result computes). Each unit is compiled by ``nvcc --ptx`` for sm_90, and by ``g++`` as a
shared library whose ``*_host_run`` functions are called through ctypes on a small
batch, writing into leaves of both layouts: batch-fastest, as our own GPU results, and
C-contiguous, as a user's ``out=`` or sparse values. No GPU is needed; tests skip only
where a compiler is missing.
"""
import ctypes
import glob
import importlib.util
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

import batchdiff as bd
from batchdiff.batching import prepare
from batchdiff.graph import Instr, Tape
from batchdiff.interpreter import evaluate
from batchdiff.kernels import cupy_exec, layout
from batchdiff.kernels.cuda_printer import print_cuda
from corpus import CASES, block_everything, calls
from test_cuda_printer import ALL_OPS_SOURCES, all_ops_tape

BATCH = 37
SMALL_SEGMENT = 16
DTYPES = [np.float64, np.float32]
# atol is relative to the largest output of the kernel: entries that cancel (a Hessian
# entry of 1.0 from terms of 170) differ by an ulp of the terms, as products differ
# from pow and C's sinf from NumPy's in the last bit.
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}
NVCC, GXX = shutil.which("nvcc"), shutil.which("g++")
BAD = np.array([[-1.0, 0.0, np.nan], [0.0, -0.0, np.inf], [np.inf, -np.inf, 1.0],
                [np.nan, 2.0, 0.0], [4.0, 1e30, -np.inf], [0.5, 0.5, -0.0]])


# Leaf layouts: the transpose of a C-contiguous (width, B) array, as the GPU's own
# results (batch-fastest), and a C-contiguous (B, width) array, as a user's out= or the
# values of a sparse result.
LAYOUTS = ("batch_fastest", "c_contiguous")
SENTINEL = -12345.0
GUARD = 5              # sentinel elements before, between and after the leaves


class Kernel:
    """One tape to print and run, with the input blocks of a batch and its leaf widths."""

    def __init__(self, label, tape, blocks, size, dtype, widths=None):
        self.label, self.tape, self.blocks, self.size = label, tape, blocks, size
        self.dtype = np.dtype(dtype)
        self.sources = layout.sources_of(blocks, size)
        self.widths = (len(tape.outputs),) if widths is None else widths

    def run(self, lib, prefix, first=0):
        """The host build's outputs, ``(B, n_outputs)``; leaf j in ``LAYOUTS[(first + j) % 2]``.

        The leaves are views of one buffer filled with a sentinel, with guards around
        them: a write outside every leaf fails here, and a missed one leaves the sentinel.
        """
        X, S = layout.pack_inputs(self.blocks, self.size, self.dtype)
        buffer, leaves = _leaves(self.widths, self.size, self.dtype, first)
        _call_host_run(getattr(lib, f"{prefix}host_run"), X, S, leaves, self.size)
        got = (np.concatenate(leaves, axis=1) if leaves
               else np.empty((self.size, 0), self.dtype))
        for leaf in leaves:
            leaf[...] = SENTINEL
        assert (buffer == SENTINEL).all(), f"{self.label}: a write outside the leaves"
        return got

    def reference(self):
        return evaluate(self.tape, self.blocks, self.size, self.dtype)


def _call_host_run(run, X, S, leaves, size):
    """Call a ``*_host_run`` through ctypes: X, S, a pointer and two strides per leaf, B."""
    args = [X.ctypes.data, S.ctypes.data]
    for leaf in leaves:
        args += [leaf.ctypes.data, leaf.strides[0] // leaf.itemsize,
                 leaf.strides[1] // leaf.itemsize]
    run.argtypes = ([ctypes.c_void_p] * 2
                    + [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong] * len(leaves)
                    + [ctypes.c_longlong])
    run.restype = None
    run(*args, int(size))


def _leaves(widths, size, dtype, first):
    """A sentinel-filled buffer and the (size, width) leaves in it, guards around each."""
    buffer = np.full(sum(widths) * size + GUARD * (len(widths) + 1), SENTINEL, dtype=dtype)
    leaves, start = [], GUARD
    for j, width in enumerate(widths):
        block = buffer[start:start + width * size]
        if LAYOUTS[(first + j) % 2] == "batch_fastest":
            leaves.append(block.reshape(width, size).T)
        else:
            leaves.append(block.reshape(size, width))
        start += width * size + GUARD
    return buffer, leaves


def _transforms(case, dtype, rng):
    """A Kernel for every transform that applies to corpus ``case``."""
    name, f, shapes, argnums, in_axes = case
    for kind, args, extra in calls(case, BATCH, dtype, rng):
        tape = getattr(bd, kind)(f, argnums, in_axes=in_axes, backend="numpy").tape(
            *args, *extra)
        blocks = prepare(args, in_axes).blocks + [e.reshape(BATCH, -1) for e in extra]
        yield Kernel(f"{name}.{kind}", tape, blocks, BATCH, dtype)


def _uneven(n):
    """Three leaves of unequal widths over ``n >= 4`` outputs."""
    return (n // 3 + 1, n // 3, n - 2 * (n // 3) - 1)


def _variants(kernel):
    """Kernels of the same tape with the outputs split into leaves, or only the non-zeros.

    The sparse variant keeps the outputs that are not the constant zero (the structural
    non-zeros, constant ones included), as a sparse result's values array does.
    """
    tape, n = kernel.tape, len(kernel.tape.outputs)
    zero = {i for i, ins in enumerate(tape.instrs) if ins.op == "const" and ins.value == 0}
    kind = kernel.label.split(".")[-1]
    same = (kernel.blocks, kernel.size, kernel.dtype)
    if kind == "value_and_grad":
        yield Kernel(kernel.label + ".leaves", tape, *same, widths=(1, n - 1))
    if kind == "hessian" and n >= 4:
        yield Kernel(kernel.label + ".leaves", tape, *same, widths=_uneven(n))
    kept = tuple(o for o in tape.outputs if o not in zero)
    if kind in ("jacobian", "hessian") and 0 < len(kept) < n:
        yield Kernel(kernel.label + ".sparse", Tape(tape.instrs, kept, tape.n_inputs), *same)


def _kernels(dtype):
    rng = np.random.default_rng(11)
    kernels = [k for case in CASES for k in _transforms(case, dtype, rng)]
    kernels += [v for k in kernels for v in _variants(k)]
    good = rng.uniform(0.1, 0.9, size=(BATCH, 3)).astype(dtype)
    kernels.append(Kernel("no_outputs", Tape((Instr("input", (), 0),), (), 1), [good[:, :1]],
                          BATCH, dtype, widths=()))
    kernels.append(Kernel("all_ops", all_ops_tape(), [good[:, :2], good[:1, 2:]], BATCH,
                          dtype))
    kernels.append(Kernel("all_ops.bad_points", all_ops_tape(),
                          [BAD[:, :2].astype(dtype), BAD[:, 2:].astype(dtype)], len(BAD), dtype))
    f = lambda v: np.sqrt(v[0]) + np.log(v[1])  # noqa: E731
    for kind in ("value_and_grad", "hessian"):
        tape = getattr(bd, kind)(f, backend="numpy").tape(BAD[:, :2])
        kernels.append(Kernel(f"sqrt_log.{kind}.bad_points", tape, [BAD[:, :2].astype(dtype)],
                              len(BAD), dtype))
    assert kernels[-4].sources == ALL_OPS_SOURCES
    points = np.random.default_rng(12).uniform(-1.0, 1.0, (BATCH, 8)).astype(dtype)
    for kind in ("value_and_grad", "hessian"):     # block instructions: loops, tables
        tape = getattr(bd, kind)(block_everything, backend="numpy").tape(points)
        assert tape.has_blocks
        kernels.append(Kernel(f"blocks.{kind}", tape, [points], BATCH, dtype))
    # a solver step: pivoting by selects, NaN for singular and non-finite points
    F = lambda v: np.stack([v[0] * v[1] - v[2], v[1] ** 2 + v[0], np.sin(v[2]) * v[0]])  # noqa: E731
    tape = bd.newton_step(F, damped=True, backend="numpy").tape(good, good[:, 0])
    steps = np.concatenate([good, BAD[:, :3]]).astype(dtype)[:BATCH]
    steps[:3] = [[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0], [np.inf, 0.5, 0.5]]
    kernels.append(Kernel("newton_step.damped", tape, [steps, steps[:, :1] * 0.1], BATCH,
                          dtype))
    return kernels


def _unit(kernels):
    """One translation unit: kernel i has prefix ``k{i}_``; odd ones in small segments."""
    return "".join(print_cuda(k.tape, k.dtype, k.sources, k.widths, prefix=f"k{i}_",
                              **({"segment": SMALL_SEGMENT} if i % 2 else {}))
                   for i, k in enumerate(kernels))


def _host_build(src_path, so_path):
    return [GXX or "g++", "-O1", "-shared", "-fPIC", "-std=c++17", "-ffp-contract=off",
            "-Wall", "-Werror", "-x", "c++", str(src_path), "-o", str(so_path)]


def _compile(command):
    done = subprocess.run(command, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Per dtype: (kernels, future of the g++ build, of the nvcc build, the library path)."""
    tmp = tmp_path_factory.mktemp("cuda")
    pool = ThreadPoolExecutor(4)
    result = {}
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        kernels = _kernels(dtype)
        src = tmp / f"{name}.cu"
        src.write_text(_unit(kernels))
        host = pool.submit(_compile, _host_build(src, tmp / f"{name}.so")) if GXX else None
        ptx = pool.submit(_compile, [NVCC or "nvcc", "--ptx", "-arch=sm_90", "-std=c++17",
                                     "-Werror", "all-warnings", str(src),
                                     "-o", str(tmp / f"{name}.ptx")]) if NVCC else None
        result[np.dtype(dtype)] = (kernels, host, ptx, tmp / f"{name}.so")
    yield result
    pool.shutdown(wait=True)


def _nvrtc():
    """libnvrtc through ctypes, from the system or the nvidia-cuda-nvrtc wheel; or None."""
    spec = importlib.util.find_spec("nvidia")
    dirs = list(spec.submodule_search_locations) if spec else []
    found = sorted((p for d in dirs for p in glob.glob(os.path.join(d, "**", "libnvrtc.so*"),
                                                         recursive=True)), reverse=True)
    for name in ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"] + found:
        try:
            folder = os.path.dirname(name)
            builtins = glob.glob(os.path.join(folder, "libnvrtc-builtins*")) if folder else []
            for path in builtins:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)   # NVRTC dlopens it by name
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _nvrtc_compile(lib, source, options):
    """(result code, log) of compiling ``source`` as NVRTC does for CuPy's RawModule."""
    program = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"unit.cu", 0,
                                  None, None) == 0
    try:
        argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        rc = lib.nvrtcCompileProgram(program, len(options), argv)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        return rc, log.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


@pytest.fixture(scope="module")
def libraries(builds):
    """Per dtype: (kernels, the loaded host library)."""
    if GXX is None:
        pytest.skip("g++ is not installed")
    libs = {}
    for dtype, (kernels, host, _, path) in builds.items():
        rc, log = host.result()
        assert rc == 0, f"g++ rejected the generated source:\n{log[-5000:]}"
        libs[dtype] = (kernels, ctypes.CDLL(str(path)))
    return libs


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_nvcc_compiles_every_kernel(builds, dtype):
    kernels, _, ptx, path = builds[np.dtype(dtype)]
    rc, log = ptx.result()
    assert rc == 0, f"nvcc rejected the generated source:\n{log[-5000:]}"
    text = path.with_suffix(".ptx").read_text()
    for i in range(len(kernels)):
        assert f".entry k{i}_kernel(" in text


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_nvrtc_compiles_every_kernel(builds, dtype):
    """What CuPy does: NVRTC has no standard headers, so the preamble's device path counts."""
    lib = _nvrtc()
    if lib is None:
        pytest.skip("NVRTC is not installed (it comes with CuPy's nvidia-cuda-nvrtc wheel)")
    path = builds[np.dtype(dtype)][3].with_suffix(".cu")
    rc, log = _nvrtc_compile(lib, path.read_text(), ["-std=c++17", "-arch=compute_90"])
    assert rc == 0, f"NVRTC rejected the generated source:\n{log[-5000:]}"


def _check(libraries, dtype, label_start):
    kernels, lib = libraries[np.dtype(dtype)]
    chosen = [(i, k) for i, k in enumerate(kernels) if k.label.startswith(label_start)]
    assert chosen
    for i, k in chosen:
        ref = k.reference()
        tol = TOLERANCE[dtype]
        scale = max(1.0, float(np.abs(ref[np.isfinite(ref)], dtype=np.float64).max(initial=0)))
        for first in range(len(LAYOUTS)):       # every leaf in each layout
            got = k.run(lib, f"k{i}_", first)
            assert got.shape == ref.shape and got.dtype == ref.dtype
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale,
                                       err_msg=f"{k.label}, first leaf {LAYOUTS[first]}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_host_build_matches_reference(libraries, case, dtype):
    _check(libraries, dtype, case[0] + ".")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_every_op_matches_reference(libraries, dtype):
    _check(libraries, dtype, "all_ops")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_block_instructions_match_reference(libraries, dtype):
    _check(libraries, dtype, "blocks.")


def test_split_hessians_write_one_node_to_several_leaves(builds):
    """The split variants cover what they are for: a computed node (mirrored Hessian
    entries) whose positions lie in different leaves; and sparse variants exist."""
    kernels = builds[np.dtype(np.float64)][0]

    def spans_leaves(k):
        leaves_of = {}
        for o, j in zip(k.tape.outputs, np.repeat(np.arange(len(k.widths)), k.widths)):
            leaves_of.setdefault(o, set()).add(j)
        return any(len(js) > 1 and k.tape.instrs[o].op != "const"
                   for o, js in leaves_of.items())
    assert any(spans_leaves(k) for k in kernels if k.label.endswith(".hessian.leaves"))
    assert any(k.label.endswith(".hessian.sparse") for k in kernels)
    assert any(k.label.endswith(".jacobian.sparse") for k in kernels)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_a_tape_without_outputs_builds_and_runs(libraries, dtype):
    _check(libraries, dtype, "no_outputs")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_nan_and_inf_propagate(libraries, dtype):
    """sqrt and log at negative, zero, NaN and infinite points: same NaN and inf as NumPy."""
    _check(libraries, dtype, "sqrt_log.")
    kernels, lib = libraries[np.dtype(dtype)]
    i = next(i for i, k in enumerate(kernels) if k.label == "sqrt_log.value_and_grad.bad_points")
    got = kernels[i].run(lib, f"k{i}_")
    assert np.isnan(got[0, 0]) and np.isnan(got[2, 0]) and np.isnan(got[3, 0])
    assert got[1, 0] == -np.inf and got[1, 1] == np.inf and got[1, 2] == -np.inf


class _HostModule:
    """Stands in for ``cupy.RawModule``: builds the source with g++, launches run on the host."""

    def __init__(self, code, options, tmp_path):
        assert options == ("-std=c++17",)
        stem = tmp_path / f"module{len(list(tmp_path.glob('*.so')))}"
        stem.with_suffix(".cu").write_text(code)
        rc, log = _compile(_host_build(stem.with_suffix(".cu"), stem.with_suffix(".so")))
        assert rc == 0, log
        self.lib = ctypes.CDLL(str(stem.with_suffix(".so")))
        self.launches = []

    def get_function(self, name):
        assert name == "bd_kernel"
        run = self.lib.bd_host_run

        def launch(grid, block, args):
            (X, S), leaves, size = args[:2], args[2:-1], args[-1]
            assert isinstance(size, np.int64)
            assert X.flags.c_contiguous and S.flags.c_contiguous and len(leaves) % 3 == 0
            outs = leaves[::3]
            for out, rs, cs in zip(outs, leaves[1::3], leaves[2::3]):
                assert isinstance(rs, np.int64) and isinstance(cs, np.int64)
                assert out.shape[0] == size
                assert (rs, cs) == tuple(st // out.itemsize for st in out.strides)
            self.launches.append((grid, block))
            _call_host_run(run, X, S, outs, size)
        return launch


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_cupy_executor_plumbing_with_a_host_stand_in(monkeypatch, tmp_path):
    """cupy_exec without a GPU: NumPy stands in for CuPy, the host build for the kernel.

    Checks the packing of X and S, the kernel's arguments (a pointer and two strides per
    leaf), the launch shape, the layouts ``empty`` makes, and that ``execute`` writes
    into the leaves it is given, batch-fastest, C-contiguous or a mix.
    """
    modules = []

    def raw_module(code, options):
        modules.append(_HostModule(code, options, tmp_path))
        return modules[-1]

    fake = SimpleNamespace(asarray=np.asarray, empty=np.empty, concatenate=np.concatenate,
                           ascontiguousarray=np.ascontiguousarray, RawModule=raw_module,
                           cuda=SimpleNamespace(Device=lambda: SimpleNamespace(id=0)))
    monkeypatch.setattr(cupy_exec, "_cupy", lambda: fake)
    monkeypatch.setattr(cupy_exec, "_modules", {})
    monkeypatch.setattr(cupy_exec, "_max_blocks", lambda device: 3)
    rng = np.random.default_rng(2)
    network = next(c for c in CASES if c[0] == "network_shared_w")
    kernel = next(k for k in _transforms(network, np.float64, rng) if k.label.endswith("jvp"))
    widths = (2, 2)                         # F(X) and J·V
    assert sum(widths) == len(kernel.tape.outputs)
    fastest = [(True, True), (False, False), (True, False)]
    for size in (BATCH, 1000):
        blocks = [np.repeat(b, size // BATCH + 1, axis=0)[:size] if b.shape[0] != 1 else b
                  for b in kernel.blocks]
        ref = evaluate(kernel.tape, blocks, size, np.float64)
        for layouts in fastest:
            outs = [cupy_exec.empty(w, size, np.float64, batch_fastest=f)
                    for w, f in zip(widths, layouts)]
            for out, w, f in zip(outs, widths, layouts):
                assert out.shape == (size, w) and out.dtype == np.float64
                assert out.strides == ((8, 8 * size) if f else (8 * w, 8))
                out[...] = np.nan
            assert cupy_exec.execute(kernel.tape, blocks, size, np.float64, outs) is None
            np.testing.assert_allclose(np.concatenate(outs, axis=1), ref, rtol=1e-12)
    assert len(modules) == 1, "the compiled module is memoised per tape, dtype, layout, widths"
    assert modules[0].launches == [((1,), (256,))] * 3 + [((3,), (256,))] * 3
    cupy_exec.execute(kernel.tape, kernel.blocks, BATCH, np.float64, [np.zeros((BATCH, 4))])
    assert len(modules) == 2, "other leaf widths, another kernel"
    empty = [np.zeros((0, w)) for w in widths]
    cupy_exec.execute(kernel.tape, [b[:0] if b.shape[0] != 1 else b for b in kernel.blocks],
                      0, np.float64, empty)
    no_outputs = Tape(kernel.tape.instrs[:kernel.tape.n_inputs], (), kernel.tape.n_inputs)
    cupy_exec.execute(no_outputs, kernel.blocks, BATCH, np.float64, [])
    assert len(modules) == 2 and len(modules[1].launches) == 1, "nothing to run, no launch"
    with pytest.raises(ValueError, match="expected float64"):
        cupy_exec.execute(kernel.tape, kernel.blocks, BATCH, np.float64,
                          [np.zeros((BATCH, 2), np.float32), np.zeros((BATCH, 2))])
    with pytest.raises(ValueError, match="replay"):
        cupy_exec.execute(kernel.tape, kernel.blocks, BATCH, np.float64, empty, method="replay")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_nvcc_compiles_the_transpose_kernel(tmp_path, dtype):
    """The tiled copy that writes staged leaves (``cupy_exec.transpose_source``)."""
    path = tmp_path / "transpose.cu"
    path.write_text(cupy_exec.transpose_source(dtype))
    out = subprocess.run([NVCC, "--ptx", "-arch=sm_90", "-std=c++17", "-o",
                          str(tmp_path / "transpose.ptx"), str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ".entry bd_transpose" in (tmp_path / "transpose.ptx").read_text()
