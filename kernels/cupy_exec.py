"""Running tapes on an NVIDIA GPU with CuPy: one thread per point.

The tape is printed as CUDA C (``cuda_printer``) and compiled by NVRTC through
``cupy.RawModule``: once per process for each (tape, dtype, input layout), and CuPy's
own kernel cache keeps the compiled module on disk across processes. Outputs are
written batch-fastest into an ``(n_outputs, B)`` array, so the threads of a warp write
adjacent addresses; the result is its transpose, a ``(B, n_outputs)`` view.

CuPy is imported only when a GPU is used: ``import cupy`` succeeds on machines without
one, but the first device call raises ``CUDARuntimeError``; ``available()`` says
whether this process can run kernels.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from . import layout
from .cuda_printer import print_cuda

BLOCK = 256            # threads per block
BLOCKS_PER_SM = 32     # grid cap: the kernel's loop strides over the rest
DLPACK_CUDA = (2, 13)  # DLPack device types kDLCUDA and kDLCUDAManaged

_modules: dict = {}
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


def source(tape, dtype, sources) -> str:
    """The CUDA C source of the kernel for this tape, dtype and input layout."""
    return print_cuda(tape, np.dtype(dtype), sources)


def kernel(tape, dtype, sources):
    """The compiled ``bd_kernel`` for this tape, dtype and input layout (memoised)."""
    key = (tape, np.dtype(dtype).str, tuple(sources))
    function = _modules.get(key)
    if function is None:
        with _modules_lock:
            function = _modules.get(key)
            if function is None:
                module = _cupy().RawModule(code=source(tape, dtype, sources),
                                           options=("-std=c++17",))
                function = module.get_function("bd_kernel")
                _modules[key] = function
    return function


@functools.cache
def _max_blocks(device_id: int) -> int:
    cupy = _cupy()
    sms = cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]
    return BLOCKS_PER_SM * sms


def execute(tape, blocks, batch_size, dtype, method="auto"):
    """Run ``tape`` over the batch on the current GPU; returns a ``(B, n_outputs)`` view.

    ``blocks`` may be CuPy or NumPy arrays (these are copied to the device); the result
    is a CuPy array, the transpose of a C-contiguous ``(n_outputs, B)`` array.
    """
    if method == "replay":
        raise ValueError("method='replay' is the Numba tape interpreter; the cupy back end "
                         "runs compiled CUDA kernels: use method='auto' or 'compiled'")
    cupy = _cupy()
    dtype = np.dtype(dtype)
    out = cupy.empty((len(tape.outputs), batch_size), dtype=dtype)
    if batch_size == 0 or not tape.outputs:
        return out.T
    blocks = [cupy.asarray(b) for b in blocks]
    X, S = layout.pack_inputs(blocks, batch_size, dtype, xp=cupy)
    function = kernel(tape, dtype, tuple(layout.sources_of(blocks, batch_size)))
    grid = min(-(-batch_size // BLOCK), _max_blocks(cupy.cuda.Device().id))
    function((grid,), (BLOCK,), (X, S, out, np.int64(batch_size)))
    return out.T
