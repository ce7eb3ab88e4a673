"""`vfm-curate`: one entry point, one module per subcommand under `curate.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from curate.errors import CurateError
from dataload.errors import VideoError

# name -> (module, one-line help). Each module has add_arguments(parser) and run(args) -> exit code.
SUBCOMMANDS = {
    "run": ("curate.commands.run", "curate videos into clips, shards, parquet and a report"),
    "probe": ("curate.commands.probe", "show what the reader sees in one video"),
    "scenes": ("curate.commands.scenes", "print the shot boundaries of videos"),
    "report": ("curate.commands.report", "(re)write OUT/report.md from the parquet files"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfm-curate",
        description="Turn raw videos into curated, captioned clips in WebDataset shards.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not built yet
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.error(f"'{args.command}' is not available in this build")
    try:
        return int(module.run(args) or 0)
    except (CurateError, VideoError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"vfm-curate {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vfm-curate {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a bare traceback; VFM_DEBUG=1 shows it
        if os.environ.get("VFM_DEBUG"):
            raise
        print(f"vfm-curate {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set VFM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
