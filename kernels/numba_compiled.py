"""The compiled executor: a tape printed as a per-expression Numba kernel.

The tape becomes straight-line Python over scalar locals, one point at a time, in a
module written to the kernel cache and compiled by Numba with ``cache=True``. Numba's
compile time grows super-linearly with function size, so the body is cut into segment
functions of at most ``SEGMENT`` statements; values crossing a segment boundary go
through a small per-block scratch array. Inputs are loaded into locals once per
segment, constants are literals of the input dtype (those an op compares are read at
run time instead, ``plan.COMPARING_OPS``: LLVM folds some comparisons of
literals wrongly), and each output element is written where it is computed (both
triangles of a Hessian from one local).

The source depends on the tape, the dtype and which inputs are shared, never on the
batch size, so a new batch size reuses the compiled kernel.

A kernel has one entry point, ``run_serial``; a parallel call runs it on a share of the
points in each of ``numba.get_num_threads()`` threads (it releases the GIL). There is no
Numba ``prange`` entry point: Numba would compile every function of the kernel a second
time, inside the parallel region, which doubles the compile time of large kernels, and
it runs no faster than the threads do.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from batchdiff.ops import OPS

from . import bounded, cache
from .numba_printers import BLOCK, TILE_BYTES, PointPrinter, TiledPrinter, tile_points  # noqa: F401
from .plan import Plan, leaf_widths

SEGMENT = 250          # statements per segment function
# Tiled kernels (SIMD across points, ``numba_printers.TiledPrinter``) are chosen for tapes
# of at least this many operations per output stored: compute-bound tapes, which run
# several times faster tiled (a tanh MLP's gradient and input Hessian, a sin chain, the
# 2-link arm: benchmarks/results/tiled.md). Tapes with at most 5 operations per output
# stored (the Rosenbrock Hessians, the Lorenz-96 Jacobian) spend their time on stores and
# run about as fast either way, and a tiled kernel compiles slower, its tanh, sin or cos
# like many instructions (``ops.Op.compile_weight``, benchmarks/results/numba_compile.md).
# The arm's value and Jacobian (weighted 9.4 per store) run 2.5x faster tiled
# (benchmarks/fused.py). None: never tile.
TILED_MIN_OPS_PER_STORE = 9
# An op with its own vectorising function (``ops.Op.vector``: tanh, sin, cos) counts as
# LIBM_WEIGHT ops: a point kernel calls libm, about ten times the cost of an arithmetic
# operation, where a tiled one has its own that vectorise
# (benchmarks/results/tiled_math.md); so the arm (9 ops, 4 of them sin or cos, 4 stores)
# is tiled.
LIBM_WEIGHT = 10
# Statements per segment of a tiled kernel. LLVM vectorises a segment's loop only while
# its loads and stores of the work array are few enough for its dependence analysis:
# segments of 250 statements reading and writing ~150 crossing values each stayed
# scalar (16 of the 46 of a tanh MLP's input Hessian, by their assembly: no zmm
# instruction); at 100 all were vectorised.
TILED_SEGMENT = 100
COMPILE_SECONDS_PER_OP = 4e-3   # compile time per instruction (compile_seconds)
TILED_COMPILE_FACTOR = 2.7
# the segments that redo a tile with libm (a sin or cos argument beyond TRIG_MAX) add about
# a third to the compile time of a tiled tape with sin or cos: an estimate from the sin
# chain's tiled gradient (benchmarks/problems.chain(125): 989 ops, 125 sin, 125 cos),
# compiled with and without them
TRIG_REDO_FACTOR = 1.35
# A kernel with blocks compiles in a time that grows with its instructions, not with the
# blocks' sizes: a tanh MLP's gradient (25 instructions) and input Hessian (89) at widths
# 16 to 32 (python benchmarks/block_crossover.py)
BLOCK_COMPILE_SECONDS = 4.0
BLOCK_COMPILE_SECONDS_PER_OP = 0.22
def print_kernel(tape, dtype, sources, widths=None, segment=None, tiled=None) -> str:
    """Python/Numba source of the kernel computing ``tape`` for ``dtype`` and input layout.

    The outputs are written into the leaves ``o0, o1, ...``, C-contiguous 2-D arrays
    of ``widths[j]`` columns whose columns, concatenated, are the tape's outputs.
    ``tiled``: print it a tile of points at a time, across SIMD lanes
    (``numba_printers.TiledPrinter``); by default as ``TILED_MIN_OPS_PER_STORE`` says
    (``is_tiled``).
    ``segment``: statements per segment function (``SEGMENT``, or ``TILED_SEGMENT``).
    """
    if tiled is None:
        tiled = is_tiled(tape, widths)
    if tape.has_blocks and not tiled:
        raise ValueError("a tape with block instructions is printed tiled (tiled=True): "
                         "its blocks are loops over the lanes of a tile")
    plan = Plan(tape, widths, segment or (TILED_SEGMENT if tiled else SEGMENT))
    return (TiledPrinter if tiled else PointPrinter)(plan, dtype, sources).source()


def is_tiled(tape, widths=None) -> bool:
    """Whether ``print_kernel`` tiles this tape by default (``TILED_MIN_OPS_PER_STORE``;
    always for a tape with block instructions)."""
    if tape.has_blocks:
        return True
    if TILED_MIN_OPS_PER_STORE is None:
        return False
    key = (tape, leaf_widths(len(tape.outputs), widths))
    stores = _stores.get(key)
    if stores is None:      # a plan of a long tape takes ms: auto asks on every call
        stores = _stores[key] = len(Plan(tape, widths).stores)
    counts = tape.op_counts
    weighted = tape.num_ops + (LIBM_WEIGHT - 1) * sum(
        n for op, n in counts.items() if OPS[op].vector)
    return weighted >= TILED_MIN_OPS_PER_STORE * max(stores, 1)


def compile_seconds(tape, widths=None) -> float:
    """About how long compiling the tape's kernel takes on the project's 2-core machine:
    ``COMPILE_SECONDS_PER_OP`` per instruction, ``TILED_COMPILE_FACTOR`` times that tiled
    (``benchmarks/results/numba_compile.md``); a tiled kernel's op compiles like
    ``ops.Op.compile_weight`` instructions (tanh, sin and cos, inlined, like many), and sin
    and cos add the segments that redo a tile with libm (``TRIG_REDO_FACTOR``); a tape with
    blocks, ``BLOCK_COMPILE_SECONDS`` and ``BLOCK_COMPILE_SECONDS_PER_OP``.

    >>> import numpy as np, batchdiff as bd
    >>> tape = bd.hessian(lambda v: np.sum(v ** 4)).tape(np.ones((1, 3)))
    >>> 0 < compile_seconds(tape) < 1
    True
    """
    if tape.has_blocks:
        return BLOCK_COMPILE_SECONDS + BLOCK_COMPILE_SECONDS_PER_OP * tape.num_ops
    if not is_tiled(tape, widths):
        return COMPILE_SECONDS_PER_OP * tape.num_ops
    counts = tape.op_counts
    trig = any(OPS[op].reduced_range for op in counts)
    ops = sum(n * OPS[op].compile_weight for op, n in counts.items())
    return COMPILE_SECONDS_PER_OP * TILED_COMPILE_FACTOR * ops * (TRIG_REDO_FACTOR if trig else 1)


PREFIX = "bdk"


def _unload(key, module):
    """A kernel module dropped from ``_kernels``: unload it unless another key uses it."""
    if not any(m is module for m in _kernels.values()):
        cache.unload(module.__name__)


_kernels = bounded.LRU(bounded.MAX_KERNELS, on_evict=_unload)
_names = bounded.LRU(bounded.MAX_TAPES)
_stores = bounded.LRU(bounded.MAX_TAPES)     # (tape, widths) -> outputs stored per point


def is_loaded(key) -> bool:
    """Whether the kernel for ``(tape, str(dtype), sources, widths)`` is loaded in this process."""
    return key in _kernels


def loaded(key):
    """The kernel module of ``key`` (as ``is_loaded``) if it is loaded, else None."""
    return _kernels.get(key)


def kernel_module(tape, dtype, sources, widths, wait: bool = True):
    """The module for this tape, dtype, input layout and leaves (memoised, disk-cached).

    Its entry points are loaded from the disk cache or compiled (``cache.load``);
    ``wait=False`` compiles nothing: ``cache.NotReady`` if it is not compiled on disk.
    """
    key = (tape, str(dtype), tuple(sources), tuple(widths))
    module = _kernels.get(key)
    if module is None:
        text = print_kernel(tape, dtype, sources, widths)
        if wait:
            name = cache.module_name(text, PREFIX)
            if not cache.is_ready(name, dtype):
                cache.announce_compile(name, f"the kernel of a tape of {tape.num_ops:,} "
                                       "instructions", compile_seconds(tape, widths))
        module = _kernels[key] = cache.load(text, PREFIX, dtype, compile_for, wait)
    return module


def module_name(tape, dtype, sources, widths) -> str:
    """The kernel's module name in the cache (its source is written there)."""
    key = (tape, str(dtype), tuple(sources), tuple(widths))
    name = _names.get(key)
    if name is None:
        name = _names[key] = cache.store(print_kernel(tape, dtype, sources, widths), PREFIX)
    return name


def compile_for(module, dtype):
    """Compile (or load) the kernel's entry point for ``dtype``: an empty run."""
    empty = np.zeros((0, 0), dtype)
    module.run_serial(empty, np.zeros(0, dtype), *[empty] * module.N_LEAVES, 0)


def run(module, X, S, outs, parallel: bool):
    """Run a kernel module over the points of ``X`` into the leaves ``outs``.

    ``S``: the shared inputs; the module's run-time constants (the constants its ops
    compare, ``plan.COMPARING_OPS``) are appended to them here. ``parallel``: the points
    are shared among threads (``numba.get_num_threads()``) in runs of ``BLOCK``."""
    if S.shape[0] != module.N_SHARED:
        raise ValueError(f"the kernel takes {module.N_SHARED} shared inputs, not {S.shape[0]}")
    if module.CONSTANTS.size:
        S = np.concatenate((S, module.CONSTANTS.astype(S.dtype, copy=False)))
    n = X.shape[0]
    bounds = _shares(n) if parallel else [0, n]
    if len(bounds) == 2:
        module.run_serial(X, S, *outs, n)
        return
    pool = _pool(len(bounds) - 1)
    rest = [pool.submit(module.run_serial, X[lo:hi], S, *[o[lo:hi] for o in outs], hi - lo)
            for lo, hi in zip(bounds[1:-1], bounds[2:])]
    lo, hi = bounds[0], bounds[1]
    module.run_serial(X[lo:hi], S, *[o[lo:hi] for o in outs], hi - lo)
    for future in rest:
        future.result()


def _shares(n) -> list:
    """Bounds of each thread's points: ``numba.get_num_threads()`` runs of whole ``BLOCK``s."""
    import numba
    threads = max(1, min(numba.get_num_threads(), -(-n // BLOCK)))
    per = -(-n // threads // BLOCK) * BLOCK
    return [min(n, k * per) for k in range(threads)] + [n]


_pool_state = {"pool": None, "size": 0}
_pool_lock = threading.Lock()


def _pool(threads) -> ThreadPoolExecutor:
    """The threads that run the shares of parallel calls besides the calling one."""
    with _pool_lock:
        if _pool_state["size"] < threads - 1:
            old = _pool_state["pool"]
            _pool_state["pool"] = ThreadPoolExecutor(threads - 1, "batchdiff-kernel")
            _pool_state["size"] = threads - 1
            if old is not None:
                old.shutdown(wait=False)
        return _pool_state["pool"]


def _after_fork():
    # a child has none of the parent's threads: it starts a pool of its own when needed
    _pool_state.update(pool=None, size=0)


os.register_at_fork(after_in_child=_after_fork)
