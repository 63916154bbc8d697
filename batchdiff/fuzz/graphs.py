"""The fuzzer's random expression graphs: the rules they are made of, and the draw.

A graph is a DAG over three variables whose nodes apply ``RULES``: NumPy source as a
user writes it (``np.log(0.125 + a * a)``, ``np.where(a < b, c, d)``,
``bd.stop_gradient(a)`` ...) with the same function in mpmath beside it, for the oracle.
Domains are safe by construction; kinks, poles and branch cuts are known to each rule.
Graph ``seed`` depends on its seed alone: its rules, outputs, points and directions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from mpmath import mp

import batchdiff

N_VARS = 3
N_POINTS = 2
GRID = 2.0 ** -12            # points: exact in float32 and float64 alike
CONSTS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0)
SPECIAL = (-0.0, np.inf, -np.inf, np.nan)      # now and then: executors must agree on them


@dataclass(frozen=True)
class Rule:
    """One construction: NumPy source over ``{0}, {1} ...`` and ``{p}``, its mpmath value.

    Domains are safe by construction (``log(p + a*a)``, ``arcsin(p * tanh(a))``);
    ``kink(p, *args)`` is the distance to the nearest kink, pole or branch cut.
    """
    arity: int
    code: str
    mp: Callable
    params: tuple = (None,)
    kink: Callable | None = None
    weight: float = 1.0


def _where(test):
    return lambda p, a, b, c, d: c if test(a, b) else d


# Constant matrices for the block rules: products with them are block instructions
# (``batchdiff.blocks``: at least ``block_trace.LINEAR_MIN`` entries). Entries are
# sixteenths, exact in float32 as in float64 and mpmath.
BLOCK_ROWS = 64
BLOCK_W = (((np.arange(BLOCK_ROWS)[:, None] * 5 + np.arange(3)[None, :] * 11) % 17) - 8) / 16.0
BLOCK_U = (((np.arange(BLOCK_ROWS)[:, None] * 7 + np.arange(3)[None, :] * 3) % 13) - 6) / 16.0
BLOCK_V = ((np.arange(BLOCK_ROWS) * 3 % 11) - 5) / 16.0
BLOCK_NAMES = {"BLOCK_W": BLOCK_W, "BLOCK_U": BLOCK_U, "BLOCK_V": BLOCK_V}


def _rows(W, a, b, c):
    """``W @ (a, b, c)`` in mpmath, row by row."""
    return [W[r, 0] * a + W[r, 1] * b + W[r, 2] * c for r in range(W.shape[0])]


def _relu_kink(p, a, b, c):
    return min(abs(z) for z in _rows(BLOCK_W, a, b, c))


def _diff(p, a, b, *rest):
    return abs(a - b)


RULES = {
    "add": Rule(2, "{0} + {1}", lambda p, a, b: a + b, weight=3.0),
    "sub": Rule(2, "{0} - {1}", lambda p, a, b: a - b, weight=2.0),
    "mul": Rule(2, "{0} * {1}", lambda p, a, b: a * b, weight=3.0),
    "div": Rule(2, "{0} / ({p} + {1} * {1})", lambda p, a, b: a / (p + b * b), (0.25, 1.0)),
    "div_pole": Rule(2, "{0} / {1}", lambda p, a, b: a / b, kink=lambda p, a, b: abs(b),
                     weight=0.5),
    "neg": Rule(1, "-{0}", lambda p, a: -a, weight=0.5),
    "pow_int": Rule(1, "{0} ** {p}", lambda p, a: a ** p, (2, 3, 4, -1),
                    kink=lambda p, a: abs(a) if p < 0 else None),
    "pow_real": Rule(1, "({p[0]} + {0} * {0}) ** {p[1]}", lambda p, a: (p[0] + a * a) ** p[1],
                     ((0.5, 0.5), (1.0, -1.5), (0.25, 2.5), (1.0, -0.25))),
    "pow_var": Rule(2, "({p} + {0} * {0}) ** {1}", lambda p, a, b: (p + a * a) ** b, (0.5, 1.0)),
    "square": Rule(1, "np.square({0})", lambda p, a: a * a, weight=0.5),
    "sqrt": Rule(1, "np.sqrt({p} + {0} * {0})", lambda p, a: mp.sqrt(p + a * a), (0.125, 1.0)),
    "exp": Rule(1, "np.exp({0})", lambda p, a: mp.exp(a)),
    "expm1": Rule(1, "np.expm1({0})", lambda p, a: mp.expm1(a)),
    "log": Rule(1, "np.log({p} + {0} * {0})", lambda p, a: mp.log(p + a * a), (0.125, 1.0)),
    "log1p": Rule(1, "np.log1p({p} * np.tanh({0}))", lambda p, a: mp.log1p(p * mp.tanh(a)),
                  (0.875, -0.875, 3.0)),
    "sin": Rule(1, "np.sin({0})", lambda p, a: mp.sin(a)),
    "cos": Rule(1, "np.cos({0})", lambda p, a: mp.cos(a)),
    "tan": Rule(1, "np.tan({p} * np.tanh({0}))", lambda p, a: mp.tan(p * mp.tanh(a)),
                (0.5, 1.5)),
    "arcsin": Rule(1, "np.arcsin({p} * np.tanh({0}))", lambda p, a: mp.asin(p * mp.tanh(a)),
                   (0.5, 0.9375)),
    "arccos": Rule(1, "np.arccos({p} * np.tanh({0}))", lambda p, a: mp.acos(p * mp.tanh(a)),
                   (0.5, 0.9375)),
    "arctan": Rule(1, "np.arctan({0})", lambda p, a: mp.atan(a)),
    "arctan2": Rule(2, "np.arctan2({0}, {1})", lambda p, a, b: mp.atan2(a, b),
                    kink=lambda p, a, b: abs(a) if b < 0 else mp.hypot(a, b)),
    "sinh": Rule(1, "np.sinh({0})", lambda p, a: mp.sinh(a)),
    "cosh": Rule(1, "np.cosh({0})", lambda p, a: mp.cosh(a)),
    "tanh": Rule(1, "np.tanh({0})", lambda p, a: mp.tanh(a)),
    "arcsinh": Rule(1, "np.arcsinh({0})", lambda p, a: mp.asinh(a)),
    "arccosh": Rule(1, "np.arccosh({p} + {0} * {0})", lambda p, a: mp.acosh(p + a * a),
                    (1.125, 2.0)),
    "arctanh": Rule(1, "np.arctanh({p} * np.tanh({0}))", lambda p, a: mp.atanh(p * mp.tanh(a)),
                    (0.5, 0.9375)),
    "cbrt": Rule(1, "np.cbrt({0})", lambda p, a: mp.cbrt(a) if a >= 0 else -mp.cbrt(-a),
                 kink=lambda p, a: abs(a), weight=0.5),
    "floor": Rule(2, "np.floor({p} * {0}) + {1}", lambda p, a, b: mp.floor(p * a) + b, (1.0, 2.5),
                  kink=lambda p, a, b: abs(p * a - mp.nint(p * a)), weight=0.3),
    "ceil": Rule(2, "np.ceil({p} * {0}) * {1}", lambda p, a, b: mp.ceil(p * a) * b, (1.0, 0.75),
                 kink=lambda p, a, b: abs(p * a - mp.nint(p * a)), weight=0.3),
    "trunc": Rule(2, "np.trunc({p} * {0}) - {1}",
                  lambda p, a, b: mp.sign(p * a) * mp.floor(abs(p * a)) - b, (1.0, 2.5), kink=lambda p, a, b: abs(p * a - mp.nint(p * a)), weight=0.3),
    "rint": Rule(2, "np.rint({p} * {0}) * {1}", lambda p, a, b: mp.nint(p * a) * b, (1.0, 1.5),
                 kink=lambda p, a, b: abs(p * a - mp.floor(p * a) - 0.5), weight=0.3),
    "fmod": Rule(1, "np.fmod({0}, {p})", lambda p, a: mp.sign(a) * mp.fmod(abs(a), abs(p)), (0.75, -1.5),
                 kink=lambda p, a: abs(a / p - mp.nint(a / p)) * abs(p), weight=0.4),
    "erf": Rule(1, "scipy.special.erf({0})", lambda p, a: mp.erf(a)),
    "erfc": Rule(1, "scipy.special.erfc({0})", lambda p, a: mp.erfc(a)),
    "gammaln": Rule(1, "scipy.special.gammaln({p} + {0} * {0})",
                    lambda p, a: mp.loggamma(p + a * a), (0.25, 1.5), weight=0.5),
    # special functions written in primitive ops (batchdiff.special): their branches
    "digamma": Rule(1, "scipy.special.psi({p} + {0} * {0})", lambda p, a: mp.digamma(p + a * a),
                    (0.25, 1.5), weight=0.4),
    "logaddexp": Rule(2, "np.logaddexp({0}, {1})", lambda p, a, b: mp.log(mp.exp(a) + mp.exp(b)),
                      weight=0.4),
    "expit": Rule(1, "scipy.special.expit({0})", lambda p, a: 1 / (1 + mp.exp(-a)), weight=0.4),
    "log_ndtr": Rule(1, "scipy.special.log_ndtr({p} * {0})", lambda p, a: mp.log(mp.ncdf(p * a)),
                     (1.0, 4.0), weight=0.4),
    "xlogy": Rule(2, "scipy.special.xlogy({0}, {p} + {1} * {1})",
                  lambda p, a, b: a * mp.log(p + b * b), (0.25, 1.0), weight=0.3),
    "hypot": Rule(2, "np.hypot({0}, {1})", lambda p, a, b: mp.hypot(a, b),
                  kink=lambda p, a, b: mp.hypot(a, b)),
    "abs": Rule(1, "np.abs({0})", lambda p, a: abs(a), kink=lambda p, a: abs(a)),
    "sign": Rule(2, "np.sign({0}) * {1}", lambda p, a, b: mp.sign(a) * b,
                 kink=lambda p, a, b: abs(a), weight=0.5),
    "maximum": Rule(2, "np.maximum({0}, {1})", lambda p, a, b: max(a, b), kink=_diff),
    "minimum": Rule(2, "np.minimum({0}, {1})", lambda p, a, b: min(a, b), kink=_diff),
    "clip": Rule(1, "np.clip({0}, -{p}, {p})", lambda p, a: min(max(a, -p), p), (0.5, 1.0),
                 kink=lambda p, a: min(abs(a - p), abs(a + p)), weight=0.5),
    "where_lt": Rule(4, "np.where({0} < {1}, {2}, {3})", _where(lambda a, b: a < b),
                     kink=_diff, weight=0.4),
    "where_le": Rule(4, "np.where({0} <= {1}, {2}, {3})", _where(lambda a, b: a <= b),
                     kink=_diff, weight=0.4),
    "where_gt": Rule(4, "np.where({0} > {1}, {2}, {3})", _where(lambda a, b: a > b),
                     kink=_diff, weight=0.4),
    "where_ge": Rule(4, "np.where({0} >= {1}, {2}, {3})", _where(lambda a, b: a >= b),
                     kink=_diff, weight=0.4),
    "where_eq": Rule(4, "np.where({0} == {1}, {2}, {3})", _where(lambda a, b: a == b),
                     kink=_diff, weight=0.3),
    "where_ne": Rule(4, "np.where({0} != {1}, {2}, {3})", _where(lambda a, b: a != b),
                     kink=_diff, weight=0.3),
    "compare": Rule(3, "({0} > {1}) * {2}", lambda p, a, b, c: c if a > b else 0 * c,
                    kink=_diff, weight=0.4),
    "safe_sqrt": Rule(1, "np.where({0} > 0, np.sqrt(np.where({0} > 0, {0}, 1.0)), 0.0)",
                      lambda p, a: mp.sqrt(a) if a > 0 else mp.mpf(0),
                      kink=lambda p, a: abs(a), weight=0.3),
    "dot": Rule(4, "np.dot(np.stack([{0}, {1}]), np.stack([{2}, {3}]))",
                lambda p, a, b, c, d: a * c + b * d, weight=0.3),
    "stop": Rule(1, "bd.stop_gradient({0})", lambda p, a: a, weight=0.7),
    # blocks: a product with a constant 64 x 3 matrix, then ops on the whole block
    "block_tanh": Rule(3, "np.sum(np.tanh({p} * (BLOCK_W @ np.stack([{0}, {1}, {2}]))) * BLOCK_V)",
                       lambda p, a, b, c: sum(mp.tanh(p * z) * v for z, v in zip(
                           _rows(BLOCK_W, a, b, c), BLOCK_V)), (0.25, 0.5), weight=0.4),
    "block_relu": Rule(3, "np.mean(np.maximum(BLOCK_W @ np.stack([{0}, {1}, {2}]), 0.0) ** 2)",
                       lambda p, a, b, c: sum(max(z, 0) ** 2 for z in _rows(BLOCK_W, a, b, c))
                       / BLOCK_ROWS, kink=_relu_kink, weight=0.3),
    "block_index": Rule(3, "(BLOCK_U @ np.stack([{0}, {1}, {2}]))[{p}] * {0}",
                        lambda p, a, b, c: _rows(BLOCK_U, a, b, c)[p] * a, (0, 17, 63),
                        weight=0.3),
    "block_right": Rule(2, "np.sum(np.sin(np.stack([{0}, {1}, {0} * {1}]) @ BLOCK_W.T) ** 2)",
                        lambda p, a, b: sum(mp.sin(z) ** 2 for z in _rows(BLOCK_W, a, b, a * b)),
                        weight=0.3),
    "block_dot": Rule(3, "np.dot(BLOCK_W @ np.stack([{0}, {1}, {2}]), "
                         "np.exp(-np.square(BLOCK_U @ np.stack([{2}, {1}, {0}]))))",
                      lambda p, a, b, c: sum(z * mp.exp(-y * y) for z, y in zip(
                          _rows(BLOCK_W, a, b, c), _rows(BLOCK_U, c, b, a))), weight=0.3),
}
_NAMES = tuple(RULES)
_WEIGHTS = np.array([RULES[n].weight for n in _NAMES]) / sum(r.weight for r in RULES.values())


# -- random graphs -----------------------------------------------------------------------

@dataclass(frozen=True)
class RandomGraph:
    """A DAG of rules: ``nodes[i] = (rule, args, param)``; ``var`` and ``const`` are leaves.

    ``points[p]`` are the checked points; ``tangents[p]`` (3,) and ``cotangents[p]``
    (one per output) the directions of jvp, vjp and hvp there.
    """
    seed: int
    nodes: tuple
    outputs: tuple
    points: tuple
    tangents: tuple
    cotangents: tuple

    @property
    def live(self) -> list:
        """Nodes the outputs depend on, in order."""
        need = set(self.outputs)
        for i in range(len(self.nodes) - 1, -1, -1):
            if i in need:
                need.update(self.nodes[i][1])
        return sorted(need)

    def source(self, name="f") -> str:
        """The graph as the Python function a user would write."""
        lines = [f"def {name}(x):"]
        for i in self.live:
            rule, args, p = self.nodes[i]
            if rule == "var":
                expr = f"x[{p}]"
            elif rule == "const":
                expr = f"np.float64({p!r})" if np.isfinite(p) else f"np.float64('{p}')"
            else:
                expr = RULES[rule].code.format(*(f"v{a}" for a in args), p=p)
            lines.append(f"    v{i} = {expr}")
        lines.append(f"    return np.stack([{', '.join(f'v{o}' for o in self.outputs)}])")
        return "\n".join(lines) + "\n"

    def function(self) -> Callable:
        import scipy.special        # the special-function rules call it, as users do
        space = {"np": np, "scipy": scipy, "bd": batchdiff, **BLOCK_NAMES}
        exec(self.source(), space)
        return space["f"]


def random_graph(seed: int) -> RandomGraph:
    """Graph ``seed``: 1 to 12 rules over three variables, 1 to 3 outputs, two points.

    >>> from batchdiff import fuzz
    >>> g = fuzz.random_graph(4)
    >>> len(g.points), len(g.outputs)
    (2, 3)
    >>> print(g.source().splitlines()[-1])
        return np.stack([v12, v8, v4])
    """
    rng = np.random.default_rng(seed)
    nodes = [("var", (), i) for i in range(N_VARS)]

    def pick():
        r = rng.random()
        if r < 0.12:
            special = rng.random() < 0.03
            nodes.append(("const", (), float(rng.choice(SPECIAL if special else CONSTS))))
            return len(nodes) - 1
        if r < 0.6:     # a recent node: depth
            return len(nodes) - 1 - int(rng.integers(min(3, len(nodes))))
        return int(rng.integers(len(nodes)))    # any node: shared sub-expressions

    for _ in range(int(rng.integers(1, 13))):
        name = _NAMES[rng.choice(len(_NAMES), p=_WEIGHTS)]
        rule = RULES[name]
        args = tuple(pick() for _ in range(rule.arity))
        if rule.arity > 1 and args[0] == args[1] and rng.random() < 0.8:
            args = (args[0], pick()) + args[2:]      # f(a, a) now and then, not often
        nodes.append((name, args, rule.params[int(rng.integers(len(rule.params)))]))
    last = len(nodes) - 1
    others = [int(rng.integers(N_VARS, last + 1)) for _ in range(int(rng.integers(0, 3)))]
    outputs = tuple([last] + others)
    points = [_point(rng, kinky=rng.random() < 0.3)] + [
        _point(rng, kinky=False) for _ in range(N_POINTS - 1)]
    eighths = [-1.0, -0.75, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0]     # exact in float32
    tangents = tuple(tuple(float(d) for d in rng.choice(eighths, N_VARS)) for _ in points)
    cotangents = tuple(tuple(float(d) for d in rng.choice(eighths, len(outputs)))
                       for _ in points)
    return RandomGraph(seed, tuple(nodes), outputs, tuple(points), tangents, cotangents)


def _point(rng, kinky):
    """A point on the grid in [-2, 2]^3; ``kinky`` ones sit on 0, +-1/2, +-1 and ties."""
    if not kinky:
        return tuple(float(x) for x in np.round(rng.uniform(-2, 2, N_VARS) / GRID) * GRID)
    x = rng.choice([0.0, 0.5, -0.5, 1.0, -1.0, 0.25], N_VARS)
    if rng.random() < 0.5:
        i, j = rng.choice(N_VARS, 2, replace=False)
        x[i] = x[j]
    return tuple(float(v) for v in x)
