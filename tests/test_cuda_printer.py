"""The CUDA printer: golden sources for small tapes, every op spelled, segments bounded.

The generated code is compiled (nvcc, and g++ as host C++) and run against the
reference interpreter in ``test_cuda_compile.py``; here its text is pinned.
"""
import re

import numpy as np

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
double* __restrict__ out, long long b, long long B)
{
    const double x0 = X[b * 2 + 0];
    const double x1 = X[b * 2 + 1];
    out[0 * B + b] = x1;
    out[1 * B + b] = x0;
}

#ifdef __CUDACC__
extern "C" __global__ void bd_kernel(const double* __restrict__ X, \
const double* __restrict__ S, double* __restrict__ out, long long B)
{
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < B;
         b += (long long)blockDim.x * gridDim.x)
        bd_point(X, S, out, b, B);
}
#else
extern "C" void bd_host_run(const double* __restrict__ X, const double* __restrict__ S, \
double* __restrict__ out, long long B)
{
    for (long long b = 0; b < B; ++b)
        bd_point(X, S, out, b, B);
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
float* __restrict__ out, long long b, long long B)
{
    const float x0 = X[b * 2 + 0];
    const float x1 = X[b * 2 + 1];
    const float v3 = (x0 * 2.0f);
    const float v4 = sinf(v3);
    const float v5 = (x1 * v4);
    out[0 * B + b] = v5;
    const float v6 = cosf(v3);
    const float v7 = (x1 * v6);
    const float v8 = (2.0f * v7);
    out[1 * B + b] = v8;
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
double* __restrict__ out, long long b, long long B)
{
    const double x0 = X[b * 2 + 0];
    const double x1 = S[0];
    const double x2 = X[b * 2 + 1];
    const double v4 = (x0 * x1);
    out[1 * B + b] = v4;
    out[2 * B + b] = v4;
    const double v5 = (v4 * x2);
    const double v6 = (v5 + (-0.5));
    out[0 * B + b] = v6;
    out[3 * B + b] = x2;
    out[4 * B + b] = (-0.5);
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
              "double* __restrict__ out")
    assert _device_code(src) == f"""\
__device__ __noinline__ void bd_segment0({params}, double* __restrict__ t, long long b, \
long long B)
{{
    const double x0 = X[b * 2 + 0];
    const double x1 = X[b * 2 + 1];
    const double v3 = exp(x0);
    t[0] = v3;
    const double v4 = (x1 * x1 * x1);
    t[1] = v4;
}}

__device__ __noinline__ void bd_segment1({params}, double* __restrict__ t, long long b, \
long long B)
{{
    const double x1 = X[b * 2 + 1];
    const double v3 = t[0];
    const double v5 = (v3 * x1);
    t[0] = v5;
    const double v6 = (v5 + v3);
}}

__device__ __noinline__ void bd_segment2({params}, double* __restrict__ t, long long b, \
long long B)
{{
    const double v4 = t[1];
    const double v5 = t[0];
    const double v7 = (v4 - v5);
    out[0 * B + b] = v7;
}}

__device__ void bd_point({params}, long long b, long long B)
{{
    double t[2];
    bd_segment0(X, S, out, t, b, B);
    bd_segment1(X, S, out, t, b, B);
    bd_segment2(X, S, out, t, b, B);
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
float* __restrict__ out, long long b, long long B)
{
    const float x0 = X[b * 1 + 0];
    const float v2 = sqrtf(x0);
    out[0 * B + b] = v2;
    out[10 * B + b] = x0;
    for (int i = 0; i < 9; ++i)
        out[bd_outputs0[i] * B + b] = 0.0f;
}

"""


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
