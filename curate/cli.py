"""`vfm-curate`: one entry point, one module per subcommand under `curate.commands`.

Error contract: bad input (a missing file, a bad config key, an unwritable or busy OUT, a FIFO where a
video belongs) prints one line on stderr and exits 2; Ctrl-C exits 130 with one line; anything else is
an internal error, exit 1, one line (VFM_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys

from curate.commands import probe, report, run, scenes
from curate.errors import CurateError
from dataload.errors import VideoError

# name -> (module, one-line help). Each module has add_arguments(parser) and run(args) -> exit code, and
# imports what its work needs (PyAV, numpy, torch...) inside run(), so `--help` starts at once.
SUBCOMMANDS = {
    "run": (run, "curate videos into clips, shards, parquet and a report"),
    "probe": (probe, "show what the reader sees in one video"),
    "scenes": (scenes, "print the shot boundaries of videos"),
    "report": (report, "(re)write OUT/report.md from the parquet files"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (the usage itself is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vfm-curate",
        description="Turn raw videos into curated, captioned clips in WebDataset shards.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _one_line(text: object) -> str:
    from curate.ids import path_text

    return " ".join(path_text(str(text)).split())


def main(argv: list[str] | None = None) -> int:
    command = "vfm-curate"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = f"vfm-curate {args.command}"
        return int(args._module.run(args) or 0)
    except (CurateError, VideoError) as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be read or written: the path and the cause
        from dataload.files import describe_os_error

        print(f"{command}: error: {_one_line(describe_os_error(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume" if command == "vfm-curate run" else ""
        print(f"{command}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a bare traceback; VFM_DEBUG=1 shows it
        if os.environ.get("VFM_DEBUG"):
            raise
        print(f"{command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set VFM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
