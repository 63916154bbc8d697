"""Dask arrays: the Rosenbrock-10 Hessian at 10^6 points, reduced per block by a sum.

``HessianSum`` times ``bd.hessian(rosenbrock)(X).sum(axis=0)`` three ways, float64,
``method="compiled"``: ``in memory`` (NumPy X, 4 calls of 250,000 points into a
reused buffer, each summed), ``dask threads`` (X a Dask array of 4 blocks, computed by
Dask's local threaded scheduler) and ``dask cluster`` (the same on a ``LocalCluster`` of
2 single-threaded worker processes, started once per benchmark process, with X made and
persisted on the workers). ``setup`` runs the computation once, so kernels are loaded everywhere.
``benchmarks/dask_scaling.py`` measures the same at 10^7 points, with the first block
of a fresh worker and the workers' peak memory.
"""
import functools

import numpy as np

from . import problems as P

POINTS = 1_000_000
CHUNK = 250_000
WAYS = ["in memory", "dask threads", "dask cluster"]


@functools.lru_cache(maxsize=None)
def _client():
    from distributed import Client, LocalCluster
    return Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0"))


@functools.lru_cache(maxsize=None)
def _prepared(way):
    """The call to time, run once."""
    import dask.array as da
    g = P.transformed(P.PROBLEMS["rosenbrock_hessian"], "compiled")
    X = P.points((10,), "float64", POINTS)
    if way == "in memory":
        buf = np.empty((CHUNK, 10, 10))

        def call():
            return sum(g(X[k:k + CHUNK], out=buf).sum(axis=0) for k in range(0, POINTS, CHUNK))
    else:
        scheduler = "threads" if way == "dask threads" else _client()
        Xd = da.from_array(X, chunks=(CHUNK, 10))
        if way == "dask cluster":                   # the batch is made on the workers
            Xd = scheduler.persist(da.random.default_rng(0).uniform(-1.0, 1.0, X.shape,
                                                                   chunks=(CHUNK, 10)))

        def call():
            return g(Xd).sum(axis=0).compute(scheduler=scheduler)
    call()
    return call


class HessianSum:
    """Seconds for the summed Hessians of 10^6 points, in memory or through Dask."""
    params = [WAYS]
    param_names = ["way"]
    timeout = 300

    def setup(self, way):
        self.call = _prepared(way)

    def time_hessian_sum(self, way):
        self.call()
