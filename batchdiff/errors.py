"""Exceptions batchdiff raises; each message says what to do instead.

Each is a ``BatchDiffError`` and also the built-in exception a caller would expect
(``TypeError``, ``ValueError``, ``RuntimeError``), so existing ``except`` clauses catch it.
"""


class BatchDiffError(Exception):
    """Base class of batchdiff's own errors: ``except bd.BatchDiffError`` catches them all.

    >>> import numpy as np, batchdiff as bd
    >>> try:
    ...     bd.grad(lambda x: x ** 2)(np.ones((2, 3)))      # grad of a vector function
    ... except bd.BatchDiffError as e:
    ...     print(type(e).__name__)
    ShapeError
    """


class TracerConversionError(BatchDiffError, TypeError):
    """A traced value was used where a concrete number is needed (``if``, ``float()``).

    While batchdiff traces a function its values are places in the tape, not numbers:
    branch with ``np.where`` instead of ``if``.

    >>> import numpy as np, batchdiff as bd
    >>> def relu(x):
    ...     return x[0] if x[0] > 0 else 0.0 * x[0]
    >>> bd.grad(relu)(np.array([[1.0]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    batchdiff.errors.TracerConversionError: a traced value has no truth value ...
    >>> bd.grad(lambda x: np.where(x[0] > 0, x[0], 0.0))(np.array([[1.0], [-1.0]]))
    array([[1.],
           [0.]])
    """


class UnsupportedOperationError(BatchDiffError, TypeError):
    """The traced function called a NumPy function or ufunc batchdiff has no rule for.

    The message names the function and lists the supported ones.

    >>> import numpy as np, batchdiff as bd
    >>> bd.grad(lambda x: np.sum(np.unique(x)))(np.ones((1, 3)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    batchdiff.errors.UnsupportedOperationError: np.unique is not supported on traced values. ...
    """


class LeakedTracerError(BatchDiffError, RuntimeError):
    """A traced value escaped the function call that traced it.

    >>> import numpy as np, batchdiff as bd
    >>> kept = []
    >>> def f(x):
    ...     kept.append(x)                       # the traced x outlives the trace
    ...     return np.sum(x)
    >>> bd.grad(f)(np.ones((1, 2)))
    array([[1., 1.]])
    >>> kept[0] + 1  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    batchdiff.errors.LeakedTracerError: a traced value was used after the call of f ...
    """


class ShapeError(BatchDiffError, ValueError):
    """Arguments, tangents or cotangents have shapes that do not fit together.

    >>> import numpy as np, batchdiff as bd
    >>> bd.grad(lambda x, y: np.sum(x * y))(np.ones((2, 3)), np.ones((3, 3)))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    batchdiff.errors.ShapeError: arguments disagree on the number of points: ...
    """


class BackendUnavailableError(BatchDiffError, RuntimeError):
    """The requested backend cannot run here (not built, not installed, or no device).

    The message says what to install or which arrays to pass.

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda v: np.sum(v ** 2)
    >>> try:
    ...     G = bd.grad(f, backend="cupy")(np.ones((1, 2)))
    ... except bd.BackendUnavailableError:       # no CuPy, or no CUDA device here
    ...     G = bd.grad(f, backend="numba")(np.ones((1, 2)))
    >>> G
    array([[2., 2.]])
    """


class CacheError(BatchDiffError, RuntimeError):
    """The kernel cache directory (``$BATCHDIFF_CACHE_DIR``) cannot be used: a file is in
    the way, it is read-only, or the disk is full. ``.directory`` is the directory.

    ``method="replay"`` and ``"compiled"`` raise it; ``method="auto"`` warns instead
    (``CacheWarning``). A caller that must not fail can fall back on the NumPy
    interpreter, which needs no cache:

    >>> import numpy as np, batchdiff as bd
    >>> f = lambda v: np.sum(v ** 2)
    >>> try:
    ...     G = bd.grad(f, method="replay")(np.ones((4, 2)))
    ... except bd.CacheError as e:
    ...     print("kernel cache unusable:", e.directory)
    ...     G = bd.grad(f, backend="numpy")(np.ones((4, 2)))
    >>> G.shape
    (4, 2)
    """

    directory: str = ""


class CacheWarning(UserWarning):
    """``method="auto"`` went on without the kernel cache (see ``CacheError``): with what
    was already loaded, or the NumPy interpreter.

    It is given once per cache directory. To fail instead, turn it into an error:

    >>> import warnings, numpy as np, batchdiff as bd
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", bd.CacheWarning)
    ...     G = bd.grad(lambda v: np.sum(v ** 2))(np.ones((4, 2)))
    >>> G.shape
    (4, 2)
    """


class CompileWarning(UserWarning):
    """A call with ``method="compiled"`` (or ``"replay"``, or any method where
    ``BATCHDIFF_BACKGROUND_COMPILE=0``) is about to wait for a compile of more than a
    few seconds (``kernels.cache.LONG_COMPILE_SECONDS``): it says what, and about how
    long. ``method="auto"`` with background compiles never waits: it logs the same at
    INFO on the ``batchdiff`` logger and answers with what is ready meanwhile.

    It is given once per kernel. To silence it:

    >>> import warnings, numpy as np, batchdiff as bd
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", bd.CompileWarning)
    ...     G = bd.grad(lambda v: np.sum(v ** 2), method="compiled")(np.ones((4, 2)))
    >>> G.shape
    (4, 2)
    """
