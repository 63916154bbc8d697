"""Printing tape instructions as source: the parts shared by every target.

A target is a table: the op spellings (``ops.Op.py`` or ``ops.Op.c``), how to write
a literal of a dtype, and the placeholders of its spellings. Integer powers are
printed as products (``x**3`` -> ``x*x*x``): ``pow`` is much slower, and the product
agrees with the reference interpreter within rounding, infinities and NaN included.
"""
from __future__ import annotations

import math

import numpy as np

from batchdiff.ops import OPS

MAX_PRODUCT_POWER = 8   # x**n with |n| up to this is printed as a product


def py_literal(value: float, dtype) -> str:
    """A Python/Numba expression for ``value`` in ``dtype`` (float32 stays float32)."""
    if math.isnan(value):
        text = "np.nan"
    elif math.isinf(value):
        text = "np.inf" if value > 0 else "(-np.inf)"
    else:
        text = repr(float(value))
    return f"np.float32({text})" if np.dtype(dtype) == np.float32 else (
        text if text[0] != "-" else f"({text})")


def c_literal(value: float, dtype) -> str:
    """A C expression for ``value`` in ``dtype``: ``1.5f`` or ``1.5``."""
    single = np.dtype(dtype) == np.float32
    if math.isnan(value):
        return "CUDART_NAN_F" if single else "CUDART_NAN"
    if math.isinf(value):
        text = "CUDART_INF_F" if single else "CUDART_INF"
        return text if value > 0 else f"(-{text})"
    text = repr(float(value))
    if "e" not in text and "." not in text:
        text += ".0"
    text = text + "f" if single else text
    return f"({text})" if text[0] == "-" else text


def power(base: str, exponent, target: str):
    """A cheaper spelling of ``base ** exponent`` for a constant exponent, or None."""
    if exponent is None or not math.isfinite(exponent):
        return None                   # x ** inf, x ** nan: pow gives NumPy's answer
    n = int(exponent)
    if n == exponent and 2 <= abs(n) <= MAX_PRODUCT_POWER:
        product = "(" + " * ".join([base] * abs(n)) + ")"
        return product if n > 0 else f"(1 / {product})"
    return None


def expression(ins, names, target: str, dtype, const_value=None) -> str:
    """Source for one instruction, with argument expressions ``names``.

    ``const_value(position)`` gives the value of an argument that is a constant (for
    the power rule), or None.
    """
    if ins.op == "pow" and const_value is not None:
        special = power(names[0], const_value(ins.args[1]), target)
        if special is not None:
            return _fill(special, names, target, dtype)
    spelling = OPS[ins.op].py if target == "py" else OPS[ins.op].c
    return _fill(spelling, names, target, dtype)


def _fill(spelling, names, target, dtype):
    single = np.dtype(dtype) == np.float32
    if target == "py":
        return spelling.format(*names, T="np.float32" if single else "np.float64")
    return spelling.format(*names, T="float" if single else "double", f="f" if single else "")


def branching_helpers(ops, dtype) -> list:
    """Numba functions ``_max(a, b)`` ... computing ``ops`` as their Python spellings do.

    >>> print(branching_helpers(["max"], np.float64)[0].strip())
    @njit(**_opts)
    def _max(a, b):
        return (a if a > b or a != a else b)
    """
    sources = []
    for op in ops:
        params = "abc"[:OPS[op].arity]
        body = _fill(OPS[op].py, list(params), "py", dtype)
        sources.append(f"\n@njit(**_opts)\ndef _{op}({', '.join(params)}):\n    return {body}\n")
    return sources
