"""The back ends' per-tape state is bounded: a process that builds many transforms keeps
bounded memory, and a kernel dropped from it loads again from the disk cache."""
import gc
import sys

import numpy as np
import pytest

import batchdiff as bd
from batchdiff.graph import Tape
from batchdiff.kernels import bounded, cache, numba_compiled, numba_exec


def _live_tapes() -> int:
    gc.collect()
    return sum(isinstance(o, Tape) for o in gc.get_objects())


def test_lru_drops_the_least_recently_used_and_reports_it():
    dropped = []
    d = bounded.LRU(3, on_evict=lambda k, v: dropped.append((k, v)))
    for k in "abc":
        d[k] = k.upper()
    assert d.get("a") == "A" and d.get("z", 0) == 0     # "a" used: "b" is now the oldest
    d["d"] = "D"
    assert list(d) == ["c", "a", "d"] and dropped == [("b", "B")]
    d["c"] = "C2"                                         # reassignment is a use too
    d["e"] = "E"
    assert list(d) == ["d", "c", "e"] and dropped[-1] == ("a", "A")


@pytest.mark.slow
def test_ten_thousand_transforms_keep_bounded_state():
    """Each transform is a new function (a new constant: a new tape), called once with
    method="auto" as a parameter sweep would: the tapes do not pile up."""
    X = np.ones((4, 3))

    def sweep(start, stop):
        for i in range(start, stop):
            bd.grad(lambda x, c=float(i): c * np.sum(x * x))(X)
    sweep(0, 2 * bounded.MAX_TAPES)
    before = _live_tapes()
    sweep(2 * bounded.MAX_TAPES, 10_000)
    assert _live_tapes() <= before + 16
    assert len(numba_exec._entries) <= bounded.MAX_TAPES


def test_a_dropped_kernel_is_unloaded_and_loads_again(monkeypatch):
    monkeypatch.setattr(numba_compiled._kernels, "maxsize", 1)
    X = np.random.default_rng(0).uniform(size=(50, 3))
    f = lambda x: np.sum(x * x * x)          # noqa: E731
    g = bd.grad(f, method="compiled")
    assert np.allclose(g(X), 3 * X * X)
    (key, module), = numba_compiled._kernels.items()
    name = module.__name__
    assert name in sys.modules and cache.is_built(name, np.float64)
    assert np.allclose(bd.grad(lambda x: np.sum(np.sin(x)), method="compiled")(X), np.cos(X))
    assert key not in numba_compiled._kernels and len(numba_compiled._kernels) == 1
    assert name not in sys.modules and not cache.is_built(name, np.float64)
    assert np.allclose(g(X), 3 * X * X)       # loaded again, from the disk cache
    assert cache.compiles(name) == 0
