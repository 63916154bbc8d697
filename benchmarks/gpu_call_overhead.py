"""Host time of one GPU call: batchdiff's Python path around a kernel that is short.

    python benchmarks/gpu_call_overhead.py

The 2-link arm Jacobian at 10^6 float32 points does about 10 µs of GPU work; this
times 1,000 calls (a new result each, and into a reused buffer) on the host, then with
the device synchronised, and prints a profile of the ``out=`` call's Python path.
"""
import cProfile
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import batchdiff as bd  # noqa: E402
from problems import problem  # noqa: E402


def main():
    import cupy
    p = problem("2-link arm")
    X = cupy.asarray(p.points(10**6, np.random.default_rng(0), np.float32))
    g = bd.jacobian(p.fn)
    out = g(X)
    for _ in range(100):
        g(X, out=out)
    cupy.cuda.Device().synchronize()
    for label, fn in (("new result", lambda: g(X)), ("out=", lambda: g(X, out=out))):
        t = time.perf_counter()
        for _ in range(1000):
            fn()
        host = (time.perf_counter() - t) / 1000
        cupy.cuda.Device().synchronize()
        total = (time.perf_counter() - t) / 1000
        print(f"{label}: host per call {host * 1e6:.1f} us, with sync {total * 1e6:.1f} us")
    profile = cProfile.Profile()
    profile.runcall(lambda: [g(X, out=out) for _ in range(2000)])
    pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
