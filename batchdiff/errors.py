"""Exceptions batchdiff raises; each message says what to do instead."""


class BatchDiffError(Exception):
    """Base class of batchdiff's own errors."""


class TracerConversionError(BatchDiffError, TypeError):
    """A traced value was used where a concrete number is needed (``if``, ``float()``)."""


class UnsupportedOperationError(BatchDiffError, TypeError):
    """The traced function called a NumPy function or ufunc batchdiff has no rule for."""


class LeakedTracerError(BatchDiffError, RuntimeError):
    """A traced value escaped the function call that traced it."""


class ShapeError(BatchDiffError, ValueError):
    """Arguments, tangents or cotangents have shapes that do not fit together."""


class BackendUnavailableError(BatchDiffError, RuntimeError):
    """The requested backend cannot run here (not built, not installed, or no device)."""


class CacheError(BatchDiffError, RuntimeError):
    """The kernel cache directory (``$BATCHDIFF_CACHE_DIR``) cannot be used: a file is in
    the way, it is read-only, or the disk is full. ``.directory`` is the directory."""

    directory: str = ""


class CacheWarning(UserWarning):
    """``method="auto"`` went on without the kernel cache (see ``CacheError``): with what
    was already loaded, or the NumPy interpreter."""
