"""`vfm-curate report OUT`: (re)write OUT/report.md and its figures from the parquet files."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the output folder of `vfm-curate run`")
    parser.epilog = ("Exit status: 0 written; 2 OUT is not the output of a run, cannot be written, or a run "
                     "is writing it now (OUT/_state/lock).")


def run(args: argparse.Namespace) -> int:
    from curate.errors import writing
    from curate.ids import path_text
    from curate.stages.write.report import require_outputs, write_report
    from curate.state import lock_out

    require_outputs(args.out)  # before taking the lock: a folder that is not a run is never written
    lock = lock_out(args.out, "vfm-curate report")  # a run in progress rewrites the parquet files under us
    try:
        with writing(args.out):
            path = write_report(args.out)
    finally:
        lock.release()
    print(f"wrote {path_text(str(path))}")
    return 0
