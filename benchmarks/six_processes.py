"""Six processes started together on an empty kernel cache, against one alone.

    python benchmarks/six_processes.py [--processes 6]

Each process imports batchdiff and makes one call that needs a kernel (``method=
"replay"``: the replay interpreter; ``method="compiled"``: the tape's kernel) with
background compiles off, so the call compiles or waits for the process compiling. The
reliability issue's target: one compile of each kernel (counted with
``BATCHDIFF_COMPILE_LOG``) and each process done within 1.5x the time of one alone.
Writes ``benchmarks/results/six_processes.md``.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import measured_line, write_result  # noqa: E402

CHILD = """
import numpy as np, batchdiff as bd
f = lambda v: np.sum(np.sin(v) * v[::-1]) + v[0] * v[1]
X = np.random.default_rng(0).random((1000, 4))
np.testing.assert_allclose(bd.grad(f, method={method!r})(X), bd.grad(f, backend="numpy")(X),
                           rtol=1e-12)
"""


def run(n, method):
    """Wall seconds of each of ``n`` processes started together, and the compiles logged."""
    with tempfile.TemporaryDirectory() as cache:
        log = os.path.join(cache, "compiles.log")
        env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache, BATCHDIFF_COMPILE_LOG=log,
                   BATCHDIFF_BACKGROUND_COMPILE="0")
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", CHILD.format(method=method)], env=env)
                 for _ in range(n)]
        times = []
        for p in procs:
            p.wait()
            assert p.returncode == 0
            times.append(time.perf_counter() - start)
        with open(log) as fh:
            modules = {line.split()[1] for line in fh}
            fh.seek(0)
            pids = {line.split()[0] for line in fh}
        return times, len(modules), len(pids)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=6)
    args = parser.parse_args(argv)
    lines = [measured_line("six_processes.py", "wall seconds from start.", sep=": "), "",
             "| method | one alone | slowest of " f"{args.processes} | ratio | processes that compiled |",
             "|---|---|---|---|---|"]
    for method in ("replay", "compiled"):
        (alone,), _, _ = run(1, method)
        times, modules, compilers = run(args.processes, method)
        lines.append(f"| {method} | {alone:.1f} | {max(times):.1f} | {max(times) / alone:.2f} | "
                     f"{compilers} (modules compiled: {modules}) |")
        print(lines[-1], flush=True)
    write_result("six_processes.md", lines)


if __name__ == "__main__":
    main()
