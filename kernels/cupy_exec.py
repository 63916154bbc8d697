"""Running tapes on an NVIDIA GPU with CuPy: one thread per point.

The tape is printed as CUDA C (``cuda_printer``) and compiled by NVRTC through
``cupy.RawModule``: once per process for each (tape, dtype, input layout, leaf widths),
and CuPy's own kernel cache keeps the compiled module on disk across processes. The
kernel writes straight into the caller's arrays, one ``(B, width)`` array per leaf of
the result, whatever their strides; ``empty`` makes them batch-fastest (the transpose
of a C-contiguous ``(width, B)`` array), so that the threads of a warp write adjacent
addresses, and C-contiguous for the ``(B, nnz)`` values of sparse results.

CuPy is imported only when a GPU is used: ``import cupy`` succeeds on machines without
one, but the first device call raises ``CUDARuntimeError``; ``available()`` says
whether this process can run kernels.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from . import bounded, layout
from .cuda_printer import print_cuda

SUMMARY = "compiled CUDA kernels on an NVIDIA GPU"
INSTALL = "CuPy and a CUDA device (pip install batchdiff[cupy]); on the CPU use backend='numba'"
METHODS = ("compiled",)
ARRAYS = ("cupy", "numpy")     # NumPy inputs are copied to the device, results back

BLOCK = 256            # threads per block
# A leaf at least this wide that is not batch-fastest (the C-contiguous (B, nnz) values of
# a sparse result, a user's C-contiguous out=) is written batch-fastest into a scratch
# array and then transposed into place by a tiled kernel: a thread's own stores to a
# C-contiguous row are a warp's scattered stores (row stride apart), which reach a
# fraction of the bandwidth. On an H100 at 10^6 points staging is 1.1-1.3x faster at
# width 16 and 3-6x at 28 to 1600, and slower below 16 (benchmarks/results/gpu_staging.md).
STAGE_MIN_WIDTH = 16
BLOCKS_PER_SM = 32     # grid cap: the kernel's loop strides over the rest
DLPACK_CUDA = (2, 13)  # DLPack device types kDLCUDA and kDLCUDAManaged

_modules = bounded.LRU(bounded.MAX_KERNELS)
_modules_lock = threading.Lock()


@functools.cache
def available() -> bool:
    """Whether CuPy is installed and sees a CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:       # ImportError, or CUDARuntimeError without a driver/device
        return False


def _cupy():
    import cupy
    return cupy


def is_cuda_dlpack(x) -> bool:
    """Whether ``x`` is another library's array on a CUDA device (PyTorch, JAX), not CuPy's.

    >>> import numpy as np
    >>> is_cuda_dlpack(np.ones(3))          # DLPack device: the CPU
    False
    """
    device = getattr(x, "__dlpack_device__", None)
    if device is None or not hasattr(x, "__dlpack__"):
        return False
    if type(x).__module__.split(".")[0] == "cupy":
        return False
    try:
        return int(device()[0]) in DLPACK_CUDA
    except Exception:
        return False


def from_dlpack(x):
    """A CuPy array on the memory of ``x`` (a PyTorch CUDA tensor, a JAX GPU array), no copy.

    A PyTorch tensor that requires grad is detached first: batchdiff differentiates
    the function itself, and PyTorch refuses to export such tensors.
    """
    cupy = _cupy()
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
        x = x.detach()
    return cupy.from_dlpack(x)


def source(tape, dtype, sources, widths=None) -> str:
    """The CUDA C source of the kernel for this tape, dtype, input layout and leaf widths."""
    return print_cuda(tape, np.dtype(dtype), sources, widths)


def kernel(tape, dtype, sources, widths):
    """The compiled ``bd_kernel`` for this tape, dtype, input layout and leaf widths (memoised)."""
    key = (tape, np.dtype(dtype).str, tuple(sources), tuple(widths))
    function = _modules.get(key)
    if function is None:
        with _modules_lock:
            function = _modules.get(key)
            if function is None:
                module = _cupy().RawModule(code=source(tape, dtype, sources, widths),
                                           options=("-std=c++17",))
                function = module.get_function("bd_kernel")
                _modules[key] = function
    return function


_TRANSPOSE = r"""
extern "C" __global__ void bd_transpose(const {T}* __restrict__ src, {T}* __restrict__ dst,
                                        long long width, long long batch,
                                        long long rs, long long cs) {{
    // src: C-contiguous (width, batch); dst[b * rs + k * cs] = src[k * batch + b].
    // A 32 x 32 tile goes through shared memory so that reads and writes both coalesce.
    __shared__ {T} tile[32][33];
    const long long b0 = (long long)blockIdx.x * 32, k0 = (long long)blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += 8) {{
        const long long k = k0 + j, b = b0 + threadIdx.x;
        if (k < width && b < batch) tile[j][threadIdx.x] = src[k * batch + b];
    }}
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {{
        const long long b = b0 + j, k = k0 + threadIdx.x;
        if (k < width && b < batch) dst[b * rs + k * cs] = tile[threadIdx.x][j];
    }}
}}
"""


def transpose_source(dtype) -> str:
    """CUDA C of ``bd_transpose``, which copies a batch-fastest leaf into any other layout."""
    return _TRANSPOSE.format(T={"f8": "double", "f4": "float"}[np.dtype(dtype).str[1:]])


@functools.cache
def _transpose_kernel(dtype_str: str):
    return _cupy().RawKernel(transpose_source(dtype_str), "bd_transpose",
                             options=("-std=c++17",))


def _transpose(src_rows, dst):
    """``dst[...] = src_rows`` for a batch-fastest ``src_rows`` (B, w) and any ``dst``."""
    batch, width = dst.shape
    src = src_rows.T                     # C-contiguous (w, B)
    grid = (-(-batch // 32), -(-width // 32))
    _transpose_kernel(dst.dtype.str)(grid, (32, 8), (
        src, dst, np.int64(width), np.int64(batch),
        np.int64(dst.strides[0] // dst.itemsize), np.int64(dst.strides[1] // dst.itemsize)))


def _staged(o) -> bool:
    """Whether leaf ``o`` is written through a batch-fastest scratch array."""
    return (STAGE_MIN_WIDTH <= o.shape[1] <= 32 * 65535       # the grid's y limit
            and o.strides[0] != o.itemsize)


@functools.cache
def _max_blocks(device_id: int) -> int:
    cupy = _cupy()
    sms = cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]
    return BLOCKS_PER_SM * sms


def run(tape, blocks, batch, outs, method="auto", fresh=True):
    """``execute`` for the registry (``kernels.execute``); NumPy leaves are written through
    device leaves and copied back."""
    if batch.xp.__name__ == "cupy":
        execute(tape, blocks, batch.size, batch.dtype, outs, method)
        return
    device = [empty(o.shape[1], batch.size, batch.dtype, batch_fastest=False) for o in outs]
    execute(tape, blocks, batch.size, batch.dtype, device, method)
    for o, d in zip(outs, device):
        d.get(out=o)        # both C-contiguous: one copy, no host temporary


def new_leaf(xp, width, batch_size, dtype, contiguous=False):
    """A new output leaf for the registry (``kernels.empty``): see ``empty``."""
    if xp.__name__ != "cupy":
        return xp.empty((batch_size, width), dtype=dtype)
    return empty(width, batch_size, dtype, batch_fastest=not contiguous)


def empty(width, batch_size, dtype, batch_fastest=True):
    """A new CuPy ``(batch_size, width)`` array for one leaf of a result.

    Batch-fastest (the transpose of a C-contiguous ``(width, B)`` array: coalesced stores)
    for dense results; C-contiguous for the ``(B, nnz)`` values of a sparse one, which
    the sparse formats take as they are.
    """
    cupy = _cupy()
    if batch_fastest:
        return cupy.empty((width, batch_size), dtype=dtype).T
    return cupy.empty((batch_size, width), dtype=dtype)


def execute(tape, blocks, batch_size, dtype, outs, method="auto"):
    """Run ``tape`` over the batch on the current GPU, writing its outputs into ``outs``.

    ``outs`` are CuPy arrays, leaf ``j`` of shape ``(batch_size, widths[j])``, of any
    strides; the tape's outputs are the leaves' columns, one leaf after the other.
    ``blocks`` may be CuPy or NumPy arrays (these are copied to the device).
    """
    if method == "replay":
        raise ValueError("method='replay' is the Numba tape interpreter; the cupy back end "
                         "runs compiled CUDA kernels: use method='auto' or 'compiled'")
    dtype = np.dtype(dtype)
    _check_outs(outs, batch_size, dtype)
    if batch_size == 0 or not tape.outputs:
        return
    cupy = _cupy()
    blocks = [cupy.asarray(b) for b in blocks]
    X, S = layout.pack_inputs(blocks, batch_size, dtype, xp=cupy)
    widths = tuple(o.shape[1] for o in outs)
    function = kernel(tape, dtype, tuple(layout.sources_of(blocks, batch_size)), widths)
    written = [empty(o.shape[1], batch_size, dtype) if _staged(o) else o for o in outs]
    args = [X, S]
    for o in written:   # RawKernel passes a view's data pointer and ignores its strides
        args += [o, np.int64(o.strides[0] // o.itemsize), np.int64(o.strides[1] // o.itemsize)]
    grid = min(-(-batch_size // BLOCK), _max_blocks(cupy.cuda.Device().id))
    function((grid,), (BLOCK,), (*args, np.int64(batch_size)))
    for w, o in zip(written, outs):
        if w is not o:
            _transpose(w, o)


def _check_outs(outs, batch_size, dtype):
    """A leaf of the wrong dtype or batch size would be written out of its bounds."""
    for o in outs:
        if o.ndim != 2 or o.shape[0] != batch_size or o.dtype != dtype:
            raise ValueError(f"an output leaf is {o.dtype} {o.shape}: expected {dtype} "
                             f"(batch_size={batch_size}, width)")
