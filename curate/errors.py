"""Errors that a command reports as one clear line (exit 2: the run could not start or could not go on)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


class CurateError(Exception):
    """A problem with the user's input or config, reported without a traceback."""


class OutputError(CurateError):
    """OUT cannot be written (read-only, full, no permission): the run stops, exit 2, with the path and
    the cause. Committed sources stay committed; a rerun once the cause is gone resumes."""


# Errors of writing that no retry of the same source can cure: the run stops instead of failing sources.
OUTPUT_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS) if e is not None)


def output_error(exc: OSError, where: str | os.PathLike | None = None) -> OutputError:
    """'cannot write <path>: <cause>' for an OSError met while writing; `where` names the place when the
    error itself carries no path (a full disk reported by a write call)."""
    from dataload.files import describe_os_error

    if where is not None and (exc.filename is None or _is_temporary(exc.filename)):
        cause = exc.strerror or str(exc) or type(exc).__name__
        return OutputError(f"cannot write {os.fspath(where)}: {cause}")
    return OutputError(describe_os_error(exc, "cannot write"))


def _is_temporary(filename) -> bool:
    """A hidden temporary name of an atomic write (".name.pid.rand.tmp"): the error names the target."""
    return os.path.basename(os.fsdecode(filename)).startswith(".")


@contextlib.contextmanager
def writing(where: str | os.PathLike) -> Iterator[None]:
    """Turn any OSError of the block into an OutputError naming `where` (or the error's own path)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(exc, where) from None
