"""What a training or generation command tells its user when something goes wrong, and with which exit status.

Bad input and a broken environment (a missing or damaged file, a bad config value, a full disk, a folder
in use) are the user's to fix: one line naming the thing and the cause, exit 2. Anything else is our bug:
one line saying so, exit 1 (VFM_DEBUG=1 shows the traceback). Ctrl-C is exit 130. The same rules hold for
an error raised inside a rank: the parent reports the rank's own message, not a wrapper around it.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

EXIT_USER = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130

# OS errors that describe the user's files or machine, not a bug of ours
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG,
                       errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EEXIST,
                       errno.ENOTEMPTY, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EXDEV}


class UserError(Exception):
    """Bad input found anywhere (parent or rank): reported as its own one line, never a traceback."""


def user_message(exc: BaseException) -> str | None:
    """The one line for an error the user can act on; None for an internal error."""
    from dataload.errors import ShardError, VideoError
    from dataload.files import describe_os_error
    from dataload.lock import FolderLockedError
    from diffusion.safe_dcp import CheckpointError

    if isinstance(exc, (UserError, ShardError, VideoError, FolderLockedError, CheckpointError)):
        return _one_line(str(exc))
    if type(exc).__name__ == "ConfigError":  # diffusion.config.ConfigError (imported lazily: it pulls torch)
        return _one_line(str(exc))
    if isinstance(exc, OSError) and (exc.errno in _ENVIRONMENT_ERRNOS or exc.errno is None
                                     or isinstance(exc, (FileNotFoundError, PermissionError))):
        return _one_line(describe_os_error(exc, "cannot use" if exc.filename else ""))
    if isinstance(exc, MemoryError):
        return "out of memory (try a smaller size, batch or model)"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "error"


def run_command(prog: str, fn: Callable[[], int]) -> int:
    """Run a command body under the error contract above; returns the exit status."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = user_message(exc)
        if message is not None:
            if os.environ.get("VFM_DEBUG"):
                raise
            print(f"{prog}: error: {message}", file=sys.stderr)
            return EXIT_USER
        if os.environ.get("VFM_DEBUG"):
            raise
        text = _one_line(str(exc))
        summary = text if type(exc).__name__ == "RankError" else f"{type(exc).__name__}: {text}"
        print(f"{prog}: internal error: {summary} (set VFM_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
