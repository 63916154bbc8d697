"""The ``numpy`` back end: the reference interpreter (``batchdiff.interpreter``), the spec.

One NumPy call per tape instruction over chunks of points; nothing is compiled, and
every other executor is tested against it.
"""
from __future__ import annotations

from batchdiff.interpreter import evaluate

SUMMARY = "the NumPy reference interpreter"
INSTALL = "NumPy"
METHODS = ()               # only "auto"
ARRAYS = ("numpy",)
source = None              # it generates no kernel


def available() -> bool:
    return True


def run(tape, blocks, batch, outs, method="auto", fresh=True):
    """Evaluate ``tape`` on the batch into ``outs`` (see ``kernels.execute``)."""
    evaluate(tape, blocks, batch.size, batch.dtype, outs=outs)
