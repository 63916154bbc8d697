"""First-call time on a GPU, with CuPy's kernel cache empty and warm.

    python benchmarks/gpu_first_call.py [--out benchmarks/results]

Each measurement is a fresh Python process (``CUPY_CACHE_DIR`` pointing at a folder of
its own, empty for the first process, then reused): it imports batchdiff and CuPy, puts
a batch of 1,000 points on the device (which creates the CUDA context), and times the
first call of each transform of ``problems.py``'s Rosenbrock n=10 and Lorenz-96 n=40,
up to the result being ready on the device: tracing, differentiation, printing the
CUDA source, NVRTC (cold) or loading CuPy's cached module (warm), and the run.
The table goes to ``gpu_first_call.md``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import cupy
import batchdiff as bd
sys.path.insert(0, {here!r})
from problems import problem
t_import = time.perf_counter() - t0
X = {{}}
for name in ("Rosenbrock n=10", "Lorenz-96 n=40"):
    p = problem(name)
    X[name] = cupy.asarray(p.points(1000, np.random.default_rng(0)))
cupy.cuda.Device().synchronize()
t_context = time.perf_counter() - t0 - t_import
found = {{"import": t_import, "context": t_context}}
for name, x in X.items():
    p = problem(name)
    for label, make in ((p.transform, lambda: getattr(bd, p.transform)(p.fn)),
                        ("sparse " + p.transform,
                         lambda: getattr(bd, p.transform)(p.fn, sparse=True))):
        g = make()
        t = time.perf_counter()
        g(x)
        cupy.cuda.Device().synchronize()
        first = time.perf_counter() - t
        t = time.perf_counter()
        g(x)
        cupy.cuda.Device().synchronize()
        found[f"{{name}} {{label}}"] = (first, time.perf_counter() - t)
print(json.dumps(found))
"""


def child(cache_dir):
    env = dict(os.environ, CUPY_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD.format(here=HERE)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        runs = [("empty", child(cache)), ("warm", child(cache)), ("warm", child(cache))]
    lines = [f"Measured with `python benchmarks/gpu_first_call.py` on "
             f"{time.strftime('%Y-%m-%d')}; a fresh process each column, B = 1,000.", "",
             "| seconds | " + " | ".join(f"CuPy cache {c}" for c, _ in runs) + " |",
             "|---|" + "---|" * len(runs)]
    keys = list(runs[0][1])
    for key in keys:
        cells = []
        for _, r in runs:
            v = r[key]
            cells.append(f"{v:.3f}" if not isinstance(v, list)
                         else f"{v[0]:.3f} (then {v[1] * 1e3:.2f} ms)")
        label = {"import": "import numpy, cupy, batchdiff",
                 "context": "CUDA context, inputs to the device"}.get(key, f"first call: {key}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "gpu_first_call.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
