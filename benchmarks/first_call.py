"""A user's first calls of a derivative: a fresh process, an empty kernel cache.

    python benchmarks/first_call.py                       # 3-64-64-64-1, gradient and Hessian
    python benchmarks/first_call.py --widths 64 256 --kinds hessian

For each tanh MLP (``batchdiff.problems.tanh_mlp``) and transform, a new Python process
with a new, empty ``BATCHDIFF_CACHE_DIR`` imports batchdiff and NumPy, makes the first
call with the defaults (``method="auto"``) on B points and then calls again in a loop
until the compiled kernel, built in the background meanwhile, answers. Reported: the
import, the first call (tracing, AD and the answer from what is ready), when the
compiled kernel and the replay interpreter, compiled in background processes at
the same time, were ready (from the start of the first call), the time of a call
before it was ready, of the next call once it is (it loads the kernel) and the fastest
of eight calls. The table goes to
``benchmarks/results/first_call.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import measured_line, table_head, write_result  # noqa: E402

PROCESS = """
import json, time
start = time.perf_counter()
import numpy as np, batchdiff as bd
from batchdiff.problems import tanh_mlp
imported = time.perf_counter() - start
X = np.random.default_rng(0).uniform(-1, 1, ({points}, 3))
f = bd.{kind}(tanh_mlp({width}, {layers}))
start = time.perf_counter()
f(X)
first = time.perf_counter() - start
t = time.perf_counter()
f(X)
second = time.perf_counter() - t
ready = {{}}                             # background compiles: the kernel's, replay's
processes = dict(bd.kernels.warmup._processes)
while len(ready) < len(processes):
    for (name, _), proc in processes.items():
        if name not in ready and proc.poll() is not None:
            ready[name] = time.perf_counter() - start
    time.sleep(0.05)
replay = max((t for n, t in ready.items() if n.startswith("bdreplay")), default=0.0)
ready = max((t for n, t in ready.items() if not n.startswith("bdreplay")), default=0.0)
bd.kernels.warmup.wait()
after = []
for _ in range(8):                     # loads the kernel, then calls as a user makes them
    t = time.perf_counter()
    f(X)
    after.append(time.perf_counter() - t)
print(json.dumps(dict(imported=imported, first=first, second=second, ready=ready,
                      replay=replay, next=after[0], settled=min(after))))
"""


def measure(width, layers, kind, points) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache)
        env.pop("BATCHDIFF_BACKGROUND_COMPILE", None)
        done = subprocess.run([sys.executable, "-c", PROCESS.format(
            width=width, layers=layers, kind=kind, points=points)], env=env,
            capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64])
    parser.add_argument("--layers", type=int, default=None,
                        help="hidden layers (default: 3 up to width 64, 2 beyond)")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--kinds", nargs="+", default=["grad", "hessian"])
    args = parser.parse_args(argv)
    lines = [measured_line("first_call.py", f"B = {args.points:,} points, float64, seconds; "
                           "each row a new process with an empty kernel cache, "
                           "method=\"auto\""), "",
             *table_head("network", "transform", "import", "first call",
                         "second call", "compiled kernel ready", "replay ready", "next call",
                         "fastest of 8 calls after it")]
    for width in args.widths:
        layers = args.layers or (3 if width <= 64 else 2)
        for kind in args.kinds:
            r = measure(width, layers, kind, args.points)
            cells = [f"3-{'-'.join([str(width)] * layers)}-1", kind,
                     *(f"{r[k]:.3f}" if r[k] < 10 else f"{r[k]:.1f}"
                       for k in ("imported", "first", "second", "ready", "replay", "next",
                                 "settled"))]
            print(" | ".join(cells), flush=True)
            lines.append("| " + " | ".join(cells) + " |")
    print(write_result("first_call.md", lines))


if __name__ == "__main__":
    main()
