"""Command line: ``python -m batchdiff demo [--points N] [--dask [SCHEDULER]]``.

Without a command (or with an unknown one) it prints the usage.
"""
from __future__ import annotations

import argparse

from . import demo


def main(argv=None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m batchdiff",
        description="batchdiff: derivatives of a small NumPy function at many points at once")
    commands = parser.add_subparsers(dest="command", metavar="command")
    demo_parser = commands.add_parser(
        "demo", help="check built-in problems against analytic derivatives, and time them")
    demo.add_arguments(demo_parser)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.run(args.points, args.dask)
    parser.print_usage()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
