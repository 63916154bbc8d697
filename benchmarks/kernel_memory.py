"""Memory a process keeps for each distinct kernel it has run, once dropped.

    python benchmarks/kernel_memory.py [--kernels 20]

Numba never frees the machine code it compiled or loaded in a process (LLVM's MCJIT
keeps it: numba/numba#5976), so dropping a kernel from batchdiff's loaded set
(``kernels/bounded.py``) frees little. This runs ``--kernels`` distinct small Hessians
with ``method="compiled"`` in a fresh process with at most 2 kernels loaded, twice on
one empty kernel cache: first each kernel is compiled in the process, then each is
loaded from the cache. It prints the resident size gained per kernel each time.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = r"""
import gc, sys, numpy as np
sys.path.insert(0, {here!r})
import batchdiff as bd
from batchdiff.kernels import numba_compiled
from memory import _status_bytes
numba_compiled._kernels.maxsize = 2
def rss():
    return _status_bytes("VmRSS")
X = np.random.default_rng(0).uniform(size=(100, 4))
bd.hessian(lambda x: np.sum(np.sin(x) * x[::-1]) * 0.5, method="compiled")(X)
before = rss()
for k in range(1, {n} + 1):
    bd.hessian(lambda x, c=1.0 + k / 7: np.sum(np.sin(x * c) * x[::-1]), method="compiled")(X)
gc.collect()
print((rss() - before) / {n})
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, BATCHDIFF_CACHE_DIR=cache_dir)
        for how in ("compiled in the process", "loaded from the disk cache"):
            out = subprocess.run([sys.executable, "-c", CHILD.format(here=HERE, n=args.kernels)],
                                 env=env, capture_output=True, text=True, check=True)
            print(f"{args.kernels} kernels {how}: "
                  f"{float(out.stdout.split()[-1]) / 1e6:.1f} MB kept per kernel", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
