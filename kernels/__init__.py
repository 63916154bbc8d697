"""Back ends: the executors that run a tape over a batch, and the registry choosing one.

A back end is a module of this package, named in ``BACKENDS`` and imported when first
used (importing one never imports Numba or CuPy). It exports:

- ``SUMMARY``: what runs, in a few words, and ``INSTALL``: what a user does to get it;
- ``METHODS``: the methods it runs besides ``"auto"``, the first of them the default;
- ``ARRAYS``: the array modules (``numpy``, ``cupy``) it takes inputs from;
- ``available()``: whether it can run on this machine;
- ``run(tape, blocks, batch, outs, method, fresh)``: the tape over the batch, into ``outs``;
- ``source(tape, dtype, sources, widths)``: its generated kernel source, if it has any;
- optionally ``new_leaf(xp, width, batch_size, dtype, contiguous)``: a new output leaf in
  the layout it writes best (``xp.empty((batch_size, width))`` otherwise).

Adding a back end is one entry here and one module. ``backend=None`` takes the first
available one of ``DEFAULTS`` for the inputs' array module: ``numba`` for NumPy arrays
(``numpy`` where Numba is missing), ``cupy`` for CuPy arrays (and CUDA arrays of other
libraries, taken in through DLPack).

>>> sorted(BACKENDS)
['cupy', 'numba', 'numpy']
>>> backend("numba").METHODS
('replay', 'compiled')
"""
from __future__ import annotations

import importlib

from batchdiff.errors import BackendUnavailableError

BACKENDS = {               # name -> module of this package
    "numpy": "reference",
    "numba": "numba_exec",
    "cupy": "cupy_exec",
}
DEFAULTS = {"numpy": ("numba", "numpy"), "cupy": ("cupy",)}    # array module -> choices


_modules: dict = {}
_available: dict = {}


def backend(name: str):
    """The module of back end ``name`` (imported on first use)."""
    module = _modules.get(name)
    if module is None:
        module = _modules[name] = importlib.import_module(f"{__name__}.{BACKENDS[name]}")
    return module


def _is_available(name) -> bool:
    """``backend(name).available()``, asked once per process where the answer is yes
    (a library found stays found; a missing one may be installed meanwhile)."""
    if _available.get(name):
        return True
    found = _available[name] = backend(name).available()
    return found


def methods() -> tuple:
    """Every method name some back end runs, ``"auto"`` first."""
    names = ["auto"]
    for name in BACKENDS:
        names += [m for m in backend(name).METHODS if m not in names]
    return tuple(names)


def check_choice(name, method):
    """Reject unknown names and methods a back end does not run, early, at transform time."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend={name!r}: use one of {(None, *BACKENDS)}")
    if method not in methods():
        raise ValueError(f"method={method!r}: use one of {methods()}")
    if name is not None and method != "auto" and method not in backend(name).METHODS:
        module = backend(name)
        raise ValueError(f"method={method!r} is not a method of backend={name!r} "
                         f"({module.SUMMARY}): use one of {('auto', *module.METHODS)}")


def resolve(name, xp) -> str:
    """The back end that runs: ``name``, or the best available one for the inputs' arrays."""
    kind = xp.__name__
    if name is None:
        choices = DEFAULTS.get(kind, DEFAULTS["numpy"])
        name = next((n for n in choices if _is_available(n)), choices[-1])
    module = backend(name)
    if not _is_available(name):
        raise BackendUnavailableError(f"backend={name!r} needs {module.INSTALL}")
    if kind not in module.ARRAYS:
        hint = (" on the CPU: convert CuPy inputs with cupy.asnumpy(...)" if kind == "cupy"
                else f": give it {' or '.join(module.ARRAYS)} arrays")
        raise BackendUnavailableError(f"backend={name!r} runs {module.SUMMARY}{hint}")
    return name


def empty(name, xp, width, batch_size, dtype, contiguous=False):
    """A new output leaf ``(batch_size, width)`` in the layout back end ``name`` writes best.

    CPU back ends write C-contiguous rows (a point's outputs side by side); the GPU
    writes batch-fastest (a warp's stores coalesce), so its leaves are transposed views,
    unless ``contiguous`` asks for C order (sparse values, whose rows are the CSR data).
    """
    make = getattr(backend(name), "new_leaf", None)
    if make is None:
        return xp.empty((batch_size, width), dtype=dtype)
    return make(xp, width, batch_size, dtype, contiguous)


def execute(tape, blocks, batch, outs, name, method, fresh=True):
    """Run ``tape`` on the batch with back end ``name``, writing into the leaves ``outs``.

    ``outs`` are 2-D arrays ``(B, w_j)`` of the batch's array kind; their columns,
    concatenated, are the tape's outputs in order. ``fresh``: they were allocated for
    this call (the caller gave no ``out=``), which matters to timing.
    """
    backend(name).run(tape, blocks, batch, outs, method, fresh)


def source(tape, blocks, batch, name, widths=None):
    """Generated kernel source for ``tape`` on back end ``name`` (input ``blocks``, extras included).

    ``widths`` are the result leaves' column counts (one leaf of every output if None).
    """
    from . import layout
    module = backend(name)
    if module.source is None:
        raise BackendUnavailableError(
            f"no kernel source for backend={name!r}: {module.SUMMARY} generates none "
            "(print the tape instead)")
    sources = tuple(layout.sources_of(blocks, batch.size))
    widths = tuple(widths) if widths is not None else (len(tape.outputs),)
    return module.source(tape, batch.dtype, sources, widths)
