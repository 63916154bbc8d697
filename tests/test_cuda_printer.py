"""The CUDA printer: golden sources for small tapes, every op spelled, segments bounded.

The generated code is compiled (nvcc, and g++ as host C++) and run against the
reference interpreter in ``test_cuda_compile.py``; here its text is pinned.
"""
import re

import numpy as np
import pytest

import batchdiff as bd
from batchdiff.graph import Instr, Tape
from batchdiff.kernels.cuda_printer import PREAMBLE, print_cuda
from batchdiff.ops import OPS


def all_ops_tape() -> Tape:
    """Every op of ``OPS`` on the inputs ``x0, x1, x2`` (``where`` picks by ``x2``).

    Also integer powers (printed as products), infinities and NaN as constants, an
    output that is an input and an output written twice. Every value is an output.
    """
    instrs = [Instr("input", (), k) for k in range(3)]

    def node(op, *args, value=None):
        instrs.append(Instr(op, args, value))
        return len(instrs) - 1

    outputs = []
    for name, op in OPS.items():
        args = {1: (0,), 2: (0, 1), 3: (2, 0, 1)}[op.arity]
        outputs.append(node(name, *args))
    outputs.append(node("pow", 0, node("const", value=3.0)))
    outputs.append(node("pow", 1, node("const", value=-2.0)))
    outputs.append(node("max", 0, node("const", value=-np.inf)))
    outputs.append(node("min", 1, node("const", value=np.inf)))
    outputs += [node("const", value=np.nan), node("const", value=1.5), 2, outputs[0]]
    return Tape(tuple(instrs), tuple(outputs), 3)


ALL_OPS_SOURCES = [("x", 0), ("x", 1), ("s", 0)]


def _device_code(src):
    """The source between the preamble and the ``#ifdef`` of the entry points."""
    assert src.startswith(PREAMBLE)
    return src[len(PREAMBLE):src.index("#ifdef __CUDACC__\nextern")]


def test_golden_gradient_of_a_product():
    tape = bd.grad(lambda v: v[0] * v[1]).tape(np.ones((1, 2)))
    src = print_cuda(tape, np.float64, [("x", 0), ("x", 1)])
    assert src == PREAMBLE + """\
__device__ void bd_point(const double* __restrict__ X, const double* __restrict__ S, \
double* __restrict__ out0, long long rs0, long long cs0, long long b)
{
    const double x0 = X[b * 2 + 0];
    const double x1 = X[b * 2 + 1];
    out0[b * rs0 + 0 * cs0] = x1;
    out0[b * rs0 + 1 * cs0] = x0;
}

#ifdef __CUDACC__
extern "C" __global__ void bd_kernel(const double* __restrict__ X, \
const double* __restrict__ S, double* __restrict__ out0, long long rs0, long long cs0, \
long long B)
{
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < B;
         b += (long long)blockDim.x * gridDim.x)
        bd_point(X, S, out0, rs0, cs0, b);
}
#else
extern "C" void bd_host_run(const double* __restrict__ X, const double* __restrict__ S, \
double* __restrict__ out0, long long rs0, long long cs0, long long B)
{
    for (long long b = 0; b < B; ++b)
        bd_point(X, S, out0, rs0, cs0, b);
}
#endif
"""


def test_golden_float32_constant_and_sin():
    """sin(2 x0) * x1 and its x0-partial: float literals, sinf/cosf, outputs as computed."""
    tape = Tape((Instr("input", (), 0), Instr("input", (), 1), Instr("const", (), 2.0),
                 Instr("mul", (0, 2)), Instr("sin", (3,)), Instr("mul", (1, 4)),
                 Instr("cos", (3,)), Instr("mul", (1, 6)), Instr("mul", (2, 7))),
                (5, 8), 2)
    src = print_cuda(tape, np.float32, [("x", 0), ("x", 1)])
    assert _device_code(src) == """\
__device__ void bd_point(const float* __restrict__ X, const float* __restrict__ S, \
float* __restrict__ out0, long long rs0, long long cs0, long long b)
{
    const float x0 = X[b * 2 + 0];
    const float x1 = X[b * 2 + 1];
    const float v3 = (x0 * 2.0f);
    const float v4 = sinf(v3);
    const float v5 = (x1 * v4);
    out0[b * rs0 + 0 * cs0] = v5;
    const float v6 = cosf(v3);
    const float v7 = (x1 * v6);
    const float v8 = (2.0f * v7);
    out0[b * rs0 + 1 * cs0] = v8;
}

"""
    assert 'extern "C" __global__ void bd_kernel(const float* __restrict__ X' in src


def test_golden_shared_input_and_repeated_outputs():
    """Input 1 comes from S; a node written to two outputs; an input and a constant as outputs."""
    tape = Tape((Instr("input", (), 0), Instr("input", (), 1), Instr("input", (), 2),
                 Instr("const", (), -0.5), Instr("mul", (0, 1)), Instr("mul", (4, 2)),
                 Instr("add", (5, 3))),
                (6, 4, 4, 2, 3), 3)
    src = print_cuda(tape, np.float64, [("x", 0), ("s", 0), ("x", 1)])
    assert _device_code(src) == """\
__device__ void bd_point(const double* __restrict__ X, const double* __restrict__ S, \
double* __restrict__ out0, long long rs0, long long cs0, long long b)
{
    const double x0 = X[b * 2 + 0];
    const double x1 = S[0];
    const double x2 = X[b * 2 + 1];
    const double v4 = (x0 * x1);
    out0[b * rs0 + 1 * cs0] = v4;
    out0[b * rs0 + 2 * cs0] = v4;
    const double v5 = (v4 * x2);
    const double v6 = (v5 + (-0.5));
    out0[b * rs0 + 0 * cs0] = v6;
    out0[b * rs0 + 3 * cs0] = x2;
    out0[b * rs0 + 4 * cs0] = (-0.5);
}

"""


def test_golden_segments_pass_values_through_reused_scratch_slots():
    """Two statements per segment: v3 crosses into segment 1 and v4 into segment 2.

    v3 is read last in segment 1, so v5 (made there, read in segment 2) reuses its slot.
    """
    tape = Tape((Instr("input", (), 0), Instr("input", (), 1), Instr("const", (), 3.0),
                 Instr("exp", (0,)), Instr("pow", (1, 2)), Instr("mul", (3, 1)),
                 Instr("add", (5, 3)), Instr("sub", (4, 5))),
                (7,), 2)
    src = print_cuda(tape, np.float64, [("x", 0), ("x", 1)], segment=2)
    params = ("const double* __restrict__ X, const double* __restrict__ S, "
              "double* __restrict__ out0, long long rs0, long long cs0")
    assert _device_code(src) == f"""\
__device__ __noinline__ void bd_segment0({params}, double* __restrict__ t, long long b)
{{
    const double x0 = X[b * 2 + 0];
    const double x1 = X[b * 2 + 1];
    const double v3 = exp(x0);
    t[0] = v3;
    const double v4 = (x1 * x1 * x1);
    t[1] = v4;
}}

__device__ __noinline__ void bd_segment1({params}, double* __restrict__ t, long long b)
{{
    const double x1 = X[b * 2 + 1];
    const double v3 = t[0];
    const double v5 = (v3 * x1);
    t[0] = v5;
    const double v6 = (v5 + v3);
}}

__device__ __noinline__ void bd_segment2({params}, double* __restrict__ t, long long b)
{{
    const double v4 = t[1];
    const double v5 = t[0];
    const double v7 = (v4 - v5);
    out0[b * rs0 + 0 * cs0] = v7;
}}

__device__ void bd_point({params}, long long b)
{{
    double t[2];
    bd_segment0(X, S, out0, rs0, cs0, t, b);
    bd_segment1(X, S, out0, rs0, cs0, t, b);
    bd_segment2(X, S, out0, rs0, cs0, t, b);
}}

"""


def test_golden_many_constant_outputs_are_written_from_a_table():
    """The zeros of a sparse Hessian: one loop over their positions, not 9 stores."""
    zero = 1
    tape = Tape((Instr("input", (), 0), Instr("const", (), 0.0), Instr("sqrt", (0,))),
                (2,) + (zero,) * 9 + (0,), 1)
    src = print_cuda(tape, np.float32, [("x", 0)])
    assert _device_code(src) == """\
__device__ const int bd_outputs0[9] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9
};

__device__ void bd_point(const float* __restrict__ X, const float* __restrict__ S, \
float* __restrict__ out0, long long rs0, long long cs0, long long b)
{
    const float x0 = X[b * 1 + 0];
    const float v2 = sqrtf(x0);
    out0[b * rs0 + 0 * cs0] = v2;
    out0[b * rs0 + 10 * cs0] = x0;
    for (int i = 0; i < 9; ++i)
        out0[b * rs0 + bd_outputs0[i] * cs0] = 0.0f;
}

"""


def test_golden_leaves_get_their_own_pointer_and_strides():
    """Widths (2, 11): one node in both leaves, written once per position, and the
    zeros of each leaf stored by themselves (leaf 0) or from that leaf's table (leaf 1)."""
    zero = 2
    tape = Tape((Instr("input", (), 0), Instr("input", (), 1), Instr("const", (), 0.0),
                 Instr("mul", (0, 1))),
                (3, zero) + (zero, 3, 0) + (zero,) * 8, 2)
    src = print_cuda(tape, np.float64, [("x", 0), ("x", 1)], widths=(2, 11))
    assert _device_code(src) == """\
__device__ const int bd_outputs0[9] = {
    0, 3, 4, 5, 6, 7, 8, 9, 10
};

__device__ void bd_point(const double* __restrict__ X, const double* __restrict__ S, \
double* __restrict__ out0, long long rs0, long long cs0, double* __restrict__ out1, \
long long rs1, long long cs1, long long b)
{
    const double x0 = X[b * 2 + 0];
    const double x1 = X[b * 2 + 1];
    const double v3 = (x0 * x1);
    out0[b * rs0 + 0 * cs0] = v3;
    out1[b * rs1 + 1 * cs1] = v3;
    out1[b * rs1 + 2 * cs1] = x0;
    out0[b * rs0 + 1 * cs0] = 0.0;
    for (int i = 0; i < 9; ++i)
        out1[b * rs1 + bd_outputs0[i] * cs1] = 0.0;
}

"""
    assert "bd_point(X, S, out0, rs0, cs0, out1, rs1, cs1, b);" in src
    assert ("void bd_host_run(const double* __restrict__ X, const double* __restrict__ S, "
            "double* __restrict__ out0, long long rs0, long long cs0, "
            "double* __restrict__ out1, long long rs1, long long cs1, long long B)") in src


def test_widths_must_cover_the_outputs():
    tape = bd.grad(lambda v: v[0] * v[1]).tape(np.ones((1, 2)))
    for widths in [(1,), (1, 2), (3, -1)]:
        with pytest.raises(ValueError, match="sum to the tape's 2 outputs"):
            print_cuda(tape, np.float64, [("x", 0), ("x", 1)], widths=widths)
    assert print_cuda(tape, np.float64, [("x", 0), ("x", 1)], widths=(2,)) == print_cuda(
        tape, np.float64, [("x", 0), ("x", 1)])


def test_a_tape_without_outputs_has_no_output_parameters():
    src = print_cuda(Tape((Instr("input", (), 0),), (), 1), np.float32, [("x", 0)], widths=())
    assert ('void bd_kernel(const float* __restrict__ X, const float* __restrict__ S, '
            'long long B)') in src and "out" not in src[len(PREAMBLE):]


def test_every_op_is_spelled_in_both_precisions():
    tape = all_ops_tape()
    assert {ins.op for ins in tape.instrs} >= set(OPS), "all_ops_tape misses a new op"
    for dtype, T, f in [(np.float64, "double", ""), (np.float32, "float", "f")]:
        src = print_cuda(tape, dtype, ALL_OPS_SOURCES)
        for i, ins in enumerate(tape.instrs):
            if ins.op in OPS and all(a < 3 for a in ins.args):
                expected = OPS[ins.op].c.format(*(f"x{a}" for a in ins.args), T=T, f=f)
                assert f"const {T} v{i} = {expected};" in src, ins.op
        assert f"= sin{f}(x0);" in src and f"= pow{f}(x0, x1);" in src
        assert f"= fabs{f}(x0);" in src and f"= atan2{f}(x0, x1);" in src
    src = print_cuda(tape, np.float32, ALL_OPS_SOURCES)
    for literal in ["= (x0 * x0 * x0);", "= (1 / (x1 * x1));", "(-CUDART_INF_F)",
                    "CUDART_INF_F)", "= CUDART_NAN_F;", "= 1.5f;", "(float)(x0 < x1)",
                    "x2 = S[0];", "= ((x2) != 0 ? (x0) : (x1));"]:
        assert literal in src, literal
    assert "CUDART_NAN;" in print_cuda(tape, np.float64, ALL_OPS_SOURCES)


def test_prefix_names_every_symbol_so_kernels_share_a_unit():
    tape = all_ops_tape()
    src = print_cuda(tape, np.float64, ALL_OPS_SOURCES, segment=10, prefix="k7_")
    code = src[len(PREAMBLE):]
    symbols = set(re.findall(r"\b(\w+_(?:point|kernel|host_run|segment\d+|outputs\d+))\b", code))
    assert symbols and all(s.startswith("k7_") for s in symbols)
    assert "bd_" not in code
    # the preamble is guarded, so a second copy in the same unit is harmless
    assert PREAMBLE.count("#ifndef BATCHDIFF_PREAMBLE") == 1


def test_segments_hold_at_most_segment_statements():
    f = lambda v: np.sum(np.sin(v) * np.exp(v[::-1]) / (1.0 + v ** 2))  # noqa: E731
    tape = bd.hessian(f).tape(np.ones((1, 6)))
    for segment in (7, 40, tape.num_ops):
        src = print_cuda(tape, np.float64, [("x", k) for k in range(6)], segment=segment)
        bodies = re.findall(r"void \w+segment\d+\(.*?\n\{\n(.*?)\n\}", src, re.S)
        n_segments = -(-tape.num_ops // segment)
        assert len(bodies) == (n_segments if n_segments > 1 else 0)
        for body in bodies:
            computed = [line for line in body.splitlines()
                        if re.match(r"\s+const double v\d+ = (?!t\[)", line)]
            assert 1 <= len(computed) <= segment


def test_cupy_source_needs_no_gpu():
    src = bd.jvp(lambda x: np.sin(x) * x[0]).source(np.ones((3, 2)), np.ones((3, 2)),
                                                     backend="cupy")
    assert 'extern "C" __global__ void bd_kernel' in src and "X[b * 4 + 3]" in src


def test_source_defaults_to_the_transforms_back_end():
    """``source()`` without ``backend``: the transform's own back end, else the one a call
    with these arguments would run (Numba for NumPy arrays)."""
    f = lambda v: v[0] * v[1]
    X = np.ones((2, 2))
    assert bd.grad(f, backend="cupy").source(X) == bd.grad(f).source(X, backend="cupy")
    assert "def run_serial" in bd.grad(f).source(X)
    with pytest.raises(bd.BackendUnavailableError, match="generates none"):
        bd.grad(f, backend="numpy").source(X)


def test_compared_constants_are_hidden_from_nvvm(tmp_path):
    """A constant that an op compares is read through ``batchdiff_opaque`` (a volatile
    local), not written as a literal: NVVM folded the value of
    ``np.where(np.maximum(1.0, x) >= 1.0, np.maximum(1.0, x), 1.0)`` into the maximum
    alone, no comparison left in the PTX (NaN at x = NaN, where NumPy gives 1.0), as LLVM
    22 does on the CPU (``kernels/plan.py``: ``COMPARING_OPS``). With the constant
    hidden, the PTX compares the maximum with it (``setp.ge``)."""
    import shutil
    import subprocess

    instrs = [Instr("input", (), 0), Instr("const", (), 1.0), Instr("const", (), 3.0),
              Instr("max", (1, 0)), Instr("ge", (3, 1)), Instr("where", (4, 3, 1)),
              Instr("mul", (2, 5))]
    src = print_cuda(Tape(tuple(instrs), (6,), 1), np.float64, [("x", 0)])
    code = _device_code(src)
    assert code.count("batchdiff_opaque<double>(1.0)") == code.count("1.0") == 1
    assert "(3.0 * " in code                                    # 3.0 is not compared
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    (tmp_path / "k.cu").write_text(src)
    subprocess.run([nvcc, "--ptx", "-arch=sm_90", "-std=c++17", "-O3", "k.cu", "-o", "k.ptx"],
                   cwd=tmp_path, check=True, capture_output=True)
    assert "setp.ge.f64" in (tmp_path / "k.ptx").read_text()
