"""The asv suite of batchdiff: each benchmark times one phase of the pipeline.

Run from ``benchmarks/``::

    asv machine --yes
    asv run --python=same --quick --show-stderr    # smoke run, one sample each
    asv run --python=same --show-stderr            # full run

Modules: ``problems`` (the functions and the shared helpers), ``bench_phases``
(trace, transform, codegen, compile, and compile time against tape length),
``bench_executors`` (run time and peak memory of each executor at B = 100,000),
``bench_outputs`` (run time and peak memory with ``out=`` and ``sparse=True``, and of
the hand-written kernels into a reused or a new array),
``bench_coldstart`` (the first call in a fresh process, empty and warm kernel cache).
"""
