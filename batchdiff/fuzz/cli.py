"""The command line: ``python -m batchdiff.fuzz --graphs N --seed S [--start I]``."""
from __future__ import annotations

import argparse
import signal
import time

from .check import DTYPES, EXECUTORS, Tally, check_range, rerun, reproducer, summary


def main(argv=None) -> int:
    """The command line; exit status 1 if anything failed."""
    parser = argparse.ArgumentParser(
        prog="python -m batchdiff.fuzz",
        description="Differential fuzzing of derivatives: random expression graphs against mpmath.")
    parser.add_argument("--graphs", type=int, default=1000, help="how many graphs")
    parser.add_argument("--seed", type=int, default=0, help="graph i is drawn from seed + i")
    parser.add_argument("--start", type=int, default=0, help="first graph i (to resume)")
    parser.add_argument("--batch", type=int, default=100, help="graphs per tape")
    parser.add_argument("--executors", default=",".join(EXECUTORS),
                        help="comma-separated: numpy, replay, compiled")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--compiled-batch", type=int, default=25,
                        help="graphs per compiled kernel")
    parser.add_argument("--compiled-every", type=int, default=1,
                        help="compile a kernel for every n-th batch only")
    parser.add_argument("--progress", type=float, default=10.0,
                        help="seconds between progress lines")
    parser.add_argument("--reproducers", type=int, default=20,
                        help="print at most this many reproducers")
    args = parser.parse_args(argv)
    executors, dtypes = tuple(args.executors.split(",")), tuple(args.dtypes.split(","))
    unknown = (set(executors) - set(EXECUTORS)) | (set(dtypes) - set(DTYPES))
    if unknown:
        parser.error(f"unknown executors or dtypes: {sorted(unknown)}")
    began = time.perf_counter()
    state = {"last": began, "shown": 0}

    def progress(tally, done):
        for f in tally.failures[state["shown"]:args.reproducers]:
            try:
                alone = f"standalone it gives {rerun(f)!r}"
            except Exception as e:      # noqa: BLE001
                alone = f"standalone it raises {type(e).__name__}: {e}"
            print(f"FAILURE ({f.kind}): {f.part} on {f.executor}, {f.dtype}, graph seed "
                  f"{f.graph.seed}: got {f.got!r}, expected {f.want!r}; {alone}\n"
                  f"{reproducer(f)}", flush=True)
        state["shown"] = max(state["shown"], min(len(tally.failures), args.reproducers))
        now = time.perf_counter()
        if now - state["last"] >= args.progress or done == args.graphs:
            state["last"] = now
            print(f"graphs {args.start}..{args.start + done - 1} of {args.start}.."
                  f"{args.start + args.graphs - 1} (seed {args.seed}): compiled "
                  f"{tally.graphs['compiled']}, failures {len(tally.failures)}, errors "
                  f"{len(tally.errors)}, {done / (now - began):.1f} graphs/s, "
                  f"{now - began:.0f} s; resume with --start {args.start + done}", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    tally = Tally()
    try:
        check_range(args.start, args.graphs, args.seed, executors, dtypes, args.batch,
                    args.compiled_batch, args.compiled_every, progress, tally)
    except KeyboardInterrupt:
        print("interrupted: the counts below are of the batches finished")
    print(summary(tally, executors, dtypes))
    return 1 if tally.failures or tally.errors else 0

