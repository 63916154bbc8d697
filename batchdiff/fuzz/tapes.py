"""A batch of graphs as one tape: every transform merged, run on every executor.

K graphs go into one function whose output stacks theirs, so one trace, one tape and
one compiled kernel check K graphs. Its argument ``y`` (three variables, zero at every
point) is added to each graph's own point (a second argument, not differentiated), so
derivatives in ``y`` are each graph's derivatives at its own point. jvp, vjp and hvp
take a second function whose graphs each have variables of their own (see ``Program``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ad, kernels
from ..batching import Batch
from ..graph import Graph, replay
from ..interpreter import evaluate
from ..simplify import strip_stops
from ..tracer import trace
from .graphs import N_POINTS, N_VARS


PARTS = ("value", "jacobian_forward", "jacobian_reverse", "hessian_forward",
         "hessian_reverse", "jvp", "vjp", "hvp")
PER_GRAPH = frozenset({"vjp", "hvp"})      # entries per graph (sums over its outputs)
ORDER = {"value": 0, "jacobian_forward": 1, "jacobian_reverse": 1, "jvp": 1, "vjp": 1,
         "hessian_forward": 2, "hessian_reverse": 2, "hvp": 2}


@dataclass
class Program:
    """The merged tape of K graphs and where each transform's outputs are.

    Inputs: ``y`` (3, shared by the graphs) and ``Y`` (3 per graph), both zero, ``c``
    (the graphs' points), ``u`` (a cotangent per output), ``v`` (a tangent per graph).
    value, jacobian and hessian differentiate ``F(y, c)`` in ``y`` (3 directions
    whatever K); jvp, vjp and hvp differentiate ``G(Y, c)`` in ``Y``, so that products
    with ``u`` and ``v`` never mix graphs (one graph's NaN derivative times a zero
    cotangent would poison the others'). ``parts[name] = (offset, width)``;
    ``hessian_index[mode] = {(j, a, b): position}``.
    """
    tape: object
    n_outputs: int
    parts: dict
    hessian_index: dict


def batch_functions(graphs):
    """``F(y, c)`` and ``G(Y, c)``: each graph at ``y + c_k`` or ``Y_k + c_k``, stacked."""
    fns = [g.function() for g in graphs]
    n = N_VARS

    def shared(y, c):
        return np.concatenate([fn(y + c[n * k:n * k + n]) for k, fn in enumerate(fns)])

    def own(Y, c):
        return np.concatenate([fn(Y[n * k:n * k + n] + c[n * k:n * k + n])
                               for k, fn in enumerate(fns)])
    return shared, own


def build_program(graphs) -> Program:
    n, kn = N_VARS, N_VARS * len(graphs)
    shared, own = batch_functions(graphs)
    with np.errstate(all="ignore"):        # constants folded by NumPy: 0 ** -1 is inf
        F, (m,), _ = trace(shared, [(n,), (kn,)])
        G, _, _ = trace(own, [(kn,), (kn,)])
    wrt, wrt_own = list(range(n)), list(range(kn))
    s_graph = Graph()                       # s(Y, c, u) = u . G(Y, c), for hvp
    s_in = [s_graph.input() for _ in range(2 * kn + m)]
    s_vals = replay(s_graph, G, s_in[:2 * kn])
    s = s_graph.const(0.0)
    for j, o in enumerate(G.outputs):
        s = s_graph.add("add", (s, s_graph.add("mul", (s_in[2 * kn + j], s_vals[o]))))
    s_tape = s_graph.finish([s])
    g = Graph()
    y, Y, c, u, v = ([g.input() for _ in range(size)] for size in (n, kn, kn, m, kn))
    hess_f, index_f = ad.hessian_tape(F, wrt, "forward")
    hess_r, index_r = ad.hessian_tape(F, wrt, "reverse")
    pieces = [("value", F, y + c),
              ("jacobian_forward", ad.jacobian_tape(F, wrt, "forward"), y + c),
              ("jacobian_reverse", ad.jacobian_tape(F, wrt, "reverse"), y + c),
              ("hessian_forward", hess_f, y + c), ("hessian_reverse", hess_r, y + c),
              ("jvp", ad.jvp_tape(G, wrt_own), Y + c + v),
              ("vjp", ad.vjp_tape(G, wrt_own), Y + c + u),
              ("hvp", ad.hvp_tape(s_tape, wrt_own), Y + c + u + v)]
    outputs, parts = [], {}
    for name, tape, inputs in pieces:
        vals = replay(g, tape, inputs)
        parts[name] = (len(outputs), len(tape.outputs))
        outputs.extend(vals[o] for o in tape.outputs)
    merged = strip_stops(g.finish(outputs))
    return Program(merged, m, parts, {"forward": index_f, "reverse": index_r})


@dataclass
class Layout:
    """The batch's rows (one per point) and which graph each output belongs to."""
    graphs: list
    out_graph: np.ndarray          # (M,) graph of each output
    out_local: np.ndarray          # (M,) index of the output in its graph
    blocks: list                   # float64 input blocks y, Y, c, u, v

    @classmethod
    def of(cls, graphs):
        out_graph = np.concatenate([[k] * len(g.outputs) for k, g in enumerate(graphs)])
        out_local = np.concatenate([np.arange(len(g.outputs)) for g in graphs])
        kn = N_VARS * len(graphs)

        def rows(attr):
            return np.array([[x for g in graphs for x in getattr(g, attr)[p]]
                             for p in range(N_POINTS)])
        blocks = [np.zeros((1, N_VARS)), np.zeros((1, kn)), rows("points"),
                  rows("cotangents"), rows("tangents")]
        return cls(graphs, out_graph, out_local, blocks)


def run(program, layout, executor, dtype) -> np.ndarray:
    """The merged tape at every point: ``(P, n_outputs)`` in ``dtype``.

    ``np.longdouble`` runs the reference interpreter in extended precision.
    """
    dtype = np.dtype(dtype)
    blocks = [b.astype(dtype) for b in layout.blocks]
    out = np.empty((N_POINTS, len(program.tape.outputs)), dtype=dtype)
    name, method = ("numpy", "auto") if executor == "numpy" else ("numba", executor)
    with np.errstate(all="ignore"):
        if dtype == np.longdouble:
            out[:] = evaluate(program.tape, blocks, N_POINTS, dtype)
        else:
            kernels.execute(program.tape, blocks, Batch(N_POINTS, [], blocks, dtype, np),
                            [out], name, method)
    return out


def results(program, layout, out) -> dict:
    """Each part's entries: ``(P, M, ...)`` per output, ``(P, K, 3)`` per graph (vjp, hvp)."""
    m, n = program.n_outputs, N_VARS

    def part(name):
        off, width = program.parts[name]
        return out[:, off:off + width]
    got = {"value": part("value")}
    for mode in ("forward", "reverse"):
        got[f"jacobian_{mode}"] = part(f"jacobian_{mode}").reshape(N_POINTS, m, n)
        h = np.empty((N_POINTS, m, n, n), dtype=out.dtype)
        flat = part(f"hessian_{mode}")
        for (j, a, b), pos in program.hessian_index[mode].items():
            h[:, j, a, b] = h[:, j, b, a] = flat[:, pos]
        got[f"hessian_{mode}"] = h
    got["jvp"] = part("jvp")[:, m:]
    got["vjp"] = part("vjp")[:, m:].reshape(N_POINTS, -1, n)
    got["hvp"] = part("hvp").reshape(N_POINTS, -1, n)
    return got


@dataclass
class Expected:
    """The oracle's entries shaped as ``results``, and per entry row its scale and status.

    ``scale[level]``, ``kink[level]``, ``singular[level]`` for level "output" ``(P, M)``
    and "graph" ``(P, K)``; scales hold the largest |value|, |first| and |second
    derivative| (at least 1) in the ancestry, for a graph over its outputs.
    """
    want: dict
    scale: dict
    kink: dict
    singular: dict


def expected(truths, layout) -> Expected:
    m, k = len(layout.out_graph), len(layout.graphs)
    val = np.full((N_POINTS, m), np.nan)
    jac = np.zeros((N_POINTS, m, N_VARS))
    hess = np.zeros((N_POINTS, m, N_VARS, N_VARS))
    scale = np.ones((N_POINTS, m, 3))
    for p in range(N_POINTS):
        for j in range(m):
            t = truths[layout.out_graph[j]][p]
            if not t.singular:
                loc = layout.out_local[j]
                val[p, j], jac[p, j], hess[p, j] = t.value[loc], t.jac[loc], t.hess[loc]
                scale[p, j] = np.maximum(1.0, t.scale[loc])
    kink = np.array([[truths[g][p].kink for g in range(k)] for p in range(N_POINTS)])
    singular = np.array([[bool(truths[g][p].singular) for g in range(k)]
                         for p in range(N_POINTS)])
    onehot = (layout.out_graph[:, None] == np.arange(k)[None, :]).astype(float)  # (M, K)
    u = layout.blocks[3]                                                        # (P, M)
    v = layout.blocks[4].reshape(N_POINTS, k, N_VARS)
    want = {"value": val}
    for mode in ("forward", "reverse"):
        want[f"jacobian_{mode}"], want[f"hessian_{mode}"] = jac, hess
    want["jvp"] = np.einsum("pji,pji->pj", jac, v[:, layout.out_graph])
    want["vjp"] = np.einsum("pj,pji,jk->pki", u, jac, onehot)
    want["hvp"] = np.einsum("pj,pjab,jk,pkb->pka", u, hess, onehot, v)
    graph_scale = np.stack([scale[:, layout.out_graph == g].max(axis=1) for g in range(k)], 1)
    sizes = np.array([len(g.outputs) for g in layout.graphs])
    return Expected(want, {"output": scale, "graph": graph_scale * sizes[None, :, None]},
                    {"output": kink[:, layout.out_graph], "graph": kink},
                    {"output": singular[:, layout.out_graph], "graph": singular})


def _scale(name, scale):
    """The scale of each entry row of part ``name``: its output's (or graph's), of its order."""
    s = scale[..., ORDER[name]]
    return s * N_VARS if name in ("jvp", "hvp") else s   # tangents: up to 1 per variable
