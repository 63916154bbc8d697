"""Differential fuzzing of derivatives: random expression graphs against mpmath.

``python -m batchdiff.fuzz --graphs N --seed S [--start I]`` checks graphs ``I .. I+N-1``;
graph ``i`` is drawn from seed ``S + i`` alone, so any range can be re-run or resumed.
Each graph is a random DAG over three variables (every op of ``ops.OPS``, shared
sub-expressions, ``np.where``, ``bd.stop_gradient``, products with constant 64 x 3
matrices and ops on the blocks they make, one to three outputs) written as NumPy
source, the function a user would write (``graphs``). At two points per graph:

- the oracle (``oracle``): mpmath at 60 digits, central differences of the graph's
  values, first and second derivatives;
- the candidates (``tapes``): the tapes batchdiff builds for the value, ``jacobian`` and
  ``hessian`` in forward and reverse mode, ``jvp``, ``vjp`` and ``hvp``, run by the NumPy
  reference interpreter and the Numba replay and compiled executors, in float64 and
  float32, many graphs to a tape;
- the verdicts (``check``): *wrong* derivatives, *executor* disagreements, and what is
  not a failure: ill-conditioned entries, points at kinks (counted apart), poles.

>>> from batchdiff import fuzz
>>> tally = fuzz.check_range(0, 20, executors=("numpy",), dtypes=("float64",))
>>> tally.failures, tally.errors, tally.graphs["numpy"]
([], [], 20)
>>> print(fuzz.random_graph(37).source())          # graph 37 of seed 0: a block rule
def f(x):
    v0 = x[0]
    v5 = np.float64(0.5)
    v6 = np.mean(np.maximum(BLOCK_W @ np.stack([v5, v0, v5]), 0.0) ** 2)
    return np.stack([v6])
<BLANKLINE>
"""
from .check import (DTYPES, EXECUTORS, Failure, Tally, check_batch, check_range, rerun,
                     reproducer, summary)
from .cli import main
from .graphs import N_POINTS, N_VARS, RULES, RandomGraph, Rule, random_graph
from .oracle import Truth, oracle
from .tapes import PARTS, Program, build_program

__all__ = ["check_range", "check_batch", "random_graph", "oracle", "build_program", "main",
           "rerun", "reproducer", "summary", "Failure", "Tally", "RandomGraph", "Rule",
           "Truth", "Program", "RULES", "PARTS", "EXECUTORS", "DTYPES", "N_VARS", "N_POINTS"]
