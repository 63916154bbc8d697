"""The fuzzer's oracle: a graph's derivatives by central differences in mpmath.

At 60 digits with a step of 2**-64 (5e-20), the truncation error of first and second
central differences is about 1e-39 times the third or fourth derivative (a graph like
``cos((0.5 + e**2) ** x)`` has those near 1e15 and more), the rounding error 1e-40
and 1e-21 relative: far beyond float64. ``stop_gradient`` holds its argument's value at
the point, so its derivatives are zero there, as batchdiff's are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpmath import mp

from .graphs import N_VARS, RULES, RandomGraph, _diff

DPS = 60
STEP = mp.mpf(2) ** -64
KINK = {"float64": 1e-6, "float32": 1e-4}   # nearer a kink than this (relative): apart
RANGE = 1e6                  # larger values, first or second derivatives: no oracle


@dataclass
class Truth:
    """The oracle at one point: outputs' values ``(m,)``, Jacobian ``(m, n)``, Hessians.

    ``scale[j]`` holds the largest |value|, |first| and |second derivative| among the
    ancestors of output ``j``; ``kink`` the smallest distance to a kink (relative to
    the largest value or first derivative of the graph) and ``kink_rule`` its rule.
    ``singular``: no oracle here (a pole, a value out of range).
    """
    value: np.ndarray = None
    jac: np.ndarray = None
    hess: np.ndarray = None
    scale: np.ndarray = None
    kink: float = np.inf
    kink_rule: str = ""
    singular: str = ""


def _evaluate(graph, live, x, base=None, kinks=None):
    vals = {}
    for i in live:
        rule, args, p = graph.nodes[i]
        if rule == "var":
            v = x[p]
        elif rule == "const":
            v = mp.mpf(p)
        elif rule == "stop" and base is not None:
            v = base[i]                     # stop_gradient: constant around the point
        else:
            r = RULES[rule]
            a = [vals[k] for k in args]
            v = r.mp(p, *a)
            if kinks is not None and r.kink is not None and not (
                    r.kink is _diff and args[0] == args[1]):    # max(a, a) has no kink
                d = r.kink(p, *a)
                if d is not None:
                    kinks.append((d, rule))
        if not isinstance(v, mp.mpf):
            v = mp.mpf(v) if isinstance(v, (int, float)) else v
        if not isinstance(v, mp.mpf) or not mp.isfinite(v) or abs(v) > RANGE:
            # also before mpmath works at the precision exp(exp(x)) would take
            raise ArithmeticError(f"{rule} gives {mp.nstr(v, 5)}")
        vals[i] = v
    return vals


def oracle(graph: RandomGraph, point) -> Truth:
    """Values and derivatives of ``graph``'s outputs at ``point`` by central differences."""
    live, n = graph.live, N_VARS
    with mp.workdps(DPS):
        x0 = [mp.mpf(c) for c in point]
        kinks = []
        try:
            base = _evaluate(graph, live, x0, kinks=kinks)

            def at(*steps):
                x = list(x0)
                for k, s in steps:
                    x[k] += s * STEP
                return _evaluate(graph, live, x, base)
            plus = [at((k, 1)) for k in range(n)]
            minus = [at((k, -1)) for k in range(n)]
            pp = {(a, b): at((a, 1), (b, 1)) for a in range(n) for b in range(a + 1, n)}
            mm = {(a, b): at((a, -1), (b, -1)) for a in range(n) for b in range(a + 1, n)}
        except (ArithmeticError, ValueError, ZeroDivisionError, OverflowError) as e:
            return Truth(singular=str(e) or type(e).__name__)
        h = STEP
        jac, hess = {}, {}
        for i in live:
            jac[i] = [(plus[k][i] - minus[k][i]) / (2 * h) for k in range(n)]
            H = [[None] * n for _ in range(n)]
            for a in range(n):
                H[a][a] = (plus[a][i] - 2 * base[i] + minus[a][i]) / (h * h)
                for b in range(a + 1, n):
                    H[a][b] = H[b][a] = (pp[a, b][i] - plus[a][i] - plus[b][i] + 2 * base[i]
                                         - minus[a][i] - minus[b][i] + mm[a, b][i]) / (2 * h * h)
            hess[i] = H
    truth = Truth()
    outs = graph.outputs
    truth.value = np.array([float(base[o]) for o in outs])
    truth.jac = np.array([[float(d) for d in jac[o]] for o in outs])
    truth.hess = np.array([[[float(d) for d in row] for row in hess[o]] for o in outs])
    sizes = {i: (abs(float(base[i])), max(abs(float(d)) for d in jac[i]),
                 max(abs(float(d)) for row in hess[i] for d in row)) for i in live}
    truth.scale = np.array([np.max([sizes[a] for a in _ancestors(graph, o)], axis=0)
                            for o in outs])
    if kinks:
        d, rule = min(kinks, key=lambda t: t[0])
        truth.kink = float(d) / max(1.0, float(truth.scale[:, :2].max()))
        truth.kink_rule = rule
    # across a kink the differences of derivatives are huge: only values must be in range
    big = truth.scale[:, 0] if truth.kink < max(KINK.values()) else truth.scale
    if big.max() > RANGE:
        truth.singular = f"out of range ({big.max():.3g})"
    return truth


def _ancestors(graph, node):
    seen, stack = {node}, [node]
    while stack:
        for a in graph.nodes[stack.pop()][1]:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen
