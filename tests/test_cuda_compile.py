"""The generated CUDA compiles, and, built as host C++, agrees with the reference interpreter.

Every case of the corpus with every transform that applies, in float64 and float32, is
printed into one translation unit per dtype (distinct name prefixes; every other kernel
cut into small segments so the segment path runs too). Each unit is compiled by
``nvcc --ptx`` for sm_90, and by ``g++`` as a shared library whose ``*_host_run``
functions are called through ctypes on a small batch. No GPU is needed; tests skip
only where a compiler is missing.
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
from batchdiff.interpreter import evaluate
from batchdiff.kernels import cupy_exec, layout
from batchdiff.kernels.cuda_printer import print_cuda
from corpus import CASES, calls
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


class Kernel:
    """One tape to print and run, with the input blocks of a batch."""

    def __init__(self, label, tape, blocks, size, dtype):
        self.label, self.tape, self.blocks, self.size = label, tape, blocks, size
        self.dtype = np.dtype(dtype)
        self.sources = layout.sources_of(blocks, size)

    def run(self, lib, prefix):
        """The host build's outputs, ``(B, n_outputs)``."""
        X, S = layout.pack_inputs(self.blocks, self.size, self.dtype)
        out = np.full((len(self.tape.outputs), self.size), -12345.0, dtype=self.dtype)
        run = getattr(lib, f"{prefix}host_run")
        run.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_longlong]
        run.restype = None
        run(X.ctypes.data, S.ctypes.data, out.ctypes.data, self.size)
        return out.T

    def reference(self):
        return evaluate(self.tape, self.blocks, self.size, self.dtype)


def _transforms(case, dtype, rng):
    """A Kernel for every transform that applies to corpus ``case``."""
    name, f, shapes, argnums, in_axes = case
    for kind, args, extra in calls(case, BATCH, dtype, rng):
        tape = getattr(bd, kind)(f, argnums, in_axes=in_axes, backend="numpy").tape(
            *args, *extra)
        blocks = prepare(args, in_axes).blocks + [e.reshape(BATCH, -1) for e in extra]
        yield Kernel(f"{name}.{kind}", tape, blocks, BATCH, dtype)


def _kernels(dtype):
    rng = np.random.default_rng(11)
    kernels = [k for case in CASES for k in _transforms(case, dtype, rng)]
    good = rng.uniform(0.1, 0.9, size=(BATCH, 3)).astype(dtype)
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
    return kernels


def _unit(kernels):
    """One translation unit: kernel i has prefix ``k{i}_``; odd ones in small segments."""
    return "".join(print_cuda(k.tape, k.dtype, k.sources, prefix=f"k{i}_",
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
        got, ref = k.run(lib, f"k{i}_"), k.reference()
        assert got.shape == ref.shape and got.dtype == ref.dtype
        tol = TOLERANCE[dtype]
        scale = max(1.0, float(np.abs(ref[np.isfinite(ref)], dtype=np.float64).max(initial=0)))
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale, err_msg=k.label)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_host_build_matches_reference(libraries, case, dtype):
    _check(libraries, dtype, case[0] + ".")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_every_op_matches_reference(libraries, dtype):
    _check(libraries, dtype, "all_ops")


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
        run.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_longlong]

        def launch(grid, block, args):
            X, S, out, size = args
            assert isinstance(size, np.int64) and out.shape[1] == size
            assert X.flags.c_contiguous and S.flags.c_contiguous and out.flags.c_contiguous
            self.launches.append((grid, block))
            run(X.ctypes.data, S.ctypes.data, out.ctypes.data, int(size))
        return launch


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_cupy_executor_plumbing_with_a_host_stand_in(monkeypatch, tmp_path):
    """cupy_exec without a GPU: NumPy stands in for CuPy, the host build for the kernel.

    Checks the packing of X and S, the kernel's arguments, the launch shape and the
    (B, n_outputs) view of the batch-fastest output array.
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
    for size in (BATCH, 1000):
        blocks = [np.repeat(b, size // BATCH + 1, axis=0)[:size] if b.shape[0] != 1 else b
                  for b in kernel.blocks]
        got = cupy_exec.execute(kernel.tape, blocks, size, np.float64)
        assert got.shape == (size, len(kernel.tape.outputs)) and got.strides[0] == 8
        np.testing.assert_allclose(got, evaluate(kernel.tape, blocks, size, np.float64),
                                   rtol=1e-12)
    assert len(modules) == 1, "the compiled module is memoised per tape, dtype and layout"
    assert modules[0].launches == [((1,), (256,)), ((3,), (256,))]
    empty = cupy_exec.execute(kernel.tape, [b[:0] if b.shape[0] != 1 else b
                                            for b in kernel.blocks], 0, np.float64)
    assert empty.shape == (0, len(kernel.tape.outputs))
    with pytest.raises(ValueError, match="replay"):
        cupy_exec.execute(kernel.tape, kernel.blocks, BATCH, np.float64, method="replay")
