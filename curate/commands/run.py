"""`vfm-curate run INPUT... --out OUT`: curate videos into clips, shards, parquet and a report.

Exit status: 0 every source done or skipped; 3 the run completed and some sources failed (the last line
says how many; sources.parquet says why); 2 it could not run (missing input, an input that is not a
regular file or folder, no videos in an input, bad config key or value, unwritable or full OUT, foreign
OUT, a different config in OUT, OUT in use by another run); 130 interrupted (Ctrl-C; rerun to resume).
"""

from __future__ import annotations

import argparse
import os

EXIT_FAILURES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Outputs: OUT/shards/shard-NNNNNN.tar (clip .mp4/.json/.txt), clips.parquet, sources.parquet, "
                     "config.yaml, dataset.json, report.md. Exit status: 0 every source done or skipped; 3 the run "
                     "completed with failed sources; 2 it could not run (missing input, no videos in an input, "
                     "bad config key, unwritable or full OUT, another config in OUT, OUT in use by another run); "
                     "130 interrupted (rerun to resume).")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders (searched recursively), globs, list files (.txt), fsspec URLs")
    parser.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--config", default=None, help="YAML config file (sections as in OUT/config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set filters.min_motion=0.3 (repeatable)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: worker processes on this machine (default); ray: a Ray cluster")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (with --executor ray)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: the number of CPU cores; 0 runs every stage in this "
                             "process)")


def run(args: argparse.Namespace) -> int:
    from curate.config import load_config
    from curate.errors import CurateError
    from curate.ids import path_text
    from curate.runner import run_curation

    if args.workers is not None and args.workers < 0:
        raise CurateError(f"--workers must be 0 (this process) or more, got {args.workers}")
    cfg = load_config(args.config, args.overrides)
    workers = args.workers if args.workers is not None else max(1, len(os.sched_getaffinity(0)))
    summary = run_curation(args.inputs, args.out, cfg, executor=args.executor, workers=workers,
                           ray_address=args.ray_address)
    out = path_text(args.out)
    print(summary.line())
    print(f"shards: {os.path.join(out, 'shards')}  report: {os.path.join(out, 'report.md')}")
    if summary.failed:
        print(f"{summary.failed} of {summary.sources} sources failed (reasons in "
              f"{os.path.join(out, 'sources.parquet')})")
        return EXIT_FAILURES
    return 0
