"""`vfm-curate report OUT`: (re)write OUT/report.md and its figures from the parquet files."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the output folder of `vfm-curate run`")


def run(args: argparse.Namespace) -> int:
    from curate.report import write_report

    path = write_report(args.out)
    print(f"wrote {path}")
    return 0
