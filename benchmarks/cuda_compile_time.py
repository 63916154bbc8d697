"""Compile time of generated CUDA against tape length (no GPU needed).

    python benchmarks/cuda_compile_time.py [--sizes 250 1000 4000]

For gradient tapes of chains ``t = sin(t) * x[k % 8] + 0.5`` (8 instructions a step),
it prints the CUDA source with ``kernels.cuda_printer`` and times ``nvcc -cubin
-arch=sm_90`` on it: NVVM and ptxas, the same work NVRTC does when CuPy compiles the
kernel (NVRTC itself is timed too where ``libnvrtc`` can be loaded through CuPy).
The table goes to ``benchmarks/results/cuda_compile.md``.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from batchdiff.kernels import layout  # noqa: E402
from batchdiff.kernels.cuda_printer import print_cuda  # noqa: E402
from problems import chain  # noqa: E402


def nvcc_seconds(source: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cu")
        with open(path, "w") as f:
            f.write(source)
        t0 = time.perf_counter()
        subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-std=c++17", "-o",
                        os.path.join(tmp, "kernel.cubin"), path], check=True)
        return time.perf_counter() - t0


def nvrtc_seconds(source: str):
    try:
        import cupy
        t0 = time.perf_counter()
        cupy.RawModule(code=source, options=("-std=c++17",)).compile()
        return time.perf_counter() - t0
    except Exception as e:   # noqa: BLE001  (no CuPy or NVRTC here)
        print(f"NVRTC not timed: {type(e).__name__}: {e}"[:300])
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[125, 500, 2000],
                        help="chain steps (about 8 tape instructions each)")
    parser.add_argument("--no-nvcc", action="store_true",
                        help="time NVRTC alone (on a machine with CuPy and a GPU)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "results", "cuda_compile.md"), help="the table's file")
    args = parser.parse_args(argv)
    if not args.no_nvcc and shutil.which("nvcc") is None:
        print("nvcc not found")
        return 1
    command = "python benchmarks/cuda_compile_time.py" + " --no-nvcc" * args.no_nvcc
    lines = [f"Measured with `{command}` on "
             f"{time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores), float64.", "",
             "| tape instructions | nvcc -cubin (s) | NVRTC (s) |", "|---|---|---|"]
    for steps in args.sizes:
        X = np.ones((4, 8))
        tape = bd.grad(chain(steps), backend="numpy").tape(X)
        source = print_cuda(tape, np.float64, layout.sources_of([X], 4))
        t_nvcc = None if args.no_nvcc else nvcc_seconds(source)
        t_nvrtc = nvrtc_seconds(source)
        nvrtc = "n/a (no CuPy)" if t_nvrtc is None else f"{t_nvrtc:.2f}"
        nvcc = "not run" if t_nvcc is None else f"{t_nvcc:.2f}"
        lines.append(f"| {len(tape.instrs)} | {nvcc} | {nvrtc} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
