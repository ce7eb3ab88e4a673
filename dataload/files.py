"""Safe file access for every part of the project: only regular files are opened, sizes are capped,
writes are atomic, and OS errors become one line that names the path and the cause.

Why here: `dataload` is the one package every other imports, and these rules are the same for a video,
a shard, a checkpoint or a config. Opening a FIFO, a device or a socket by path blocks or reads forever,
so a path is opened non-blocking first and checked on its descriptor (no race between check and open).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class _OneLineOSError(OSError):
    """An OSError whose str() is its message alone (no '[Errno N]' prefix)."""

    def __str__(self) -> str:
        return str(self.strerror)


class NotRegularFileError(_OneLineOSError):
    """A path that must be a regular file is something else (named in the message)."""


class FileTooLargeError(_OneLineOSError):
    """A file or a declared member size is over the configured cap."""


def file_kind(mode: int) -> str:
    """The kind of a file from its st_mode, in words."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "special file"


def describe_os_error(exc: OSError, action: str = "") -> str:
    """One line: '<action> <path>: <cause>' (e.g. 'cannot write /out/x: No space left on device')."""
    if isinstance(exc, (NotRegularFileError, FileTooLargeError)):
        return str(exc)
    cause = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    if isinstance(where, bytes):
        where = os.fsdecode(where)
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    head = f"{action} {where}".strip() if action or where else ""
    return f"{head}: {cause}" if head else cause


def regular_file_size(path: str | os.PathLike, what: str = "file") -> int:
    """The size of `path`, which must be a regular file (symlinks followed); raises
    FileNotFoundError, NotRegularFileError (naming the kind) or OSError (a symlink loop, no permission)."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: {what} not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFileError(errno.ELOOP, f"{p}: {what} is a symbolic link loop") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(errno.EINVAL, f"{p}: {what} is a {file_kind(st.st_mode)}, not a regular file")
    return st.st_size


def open_regular(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> BinaryIO:
    """Open a regular file for binary reading without ever blocking on a FIFO or device.

    The path is opened with O_NONBLOCK (a FIFO with no writer then returns at once) and the descriptor is
    checked, so a file swapped between a check and the open is still caught."""
    p = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: {what} not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFileError(errno.ELOOP, f"{p}: {what} is a symbolic link loop") from None
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO opened for writing only
            raise NotRegularFileError(errno.ENXIO, f"{p}: {what} is not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, f"{p}: {what} is a {file_kind(st.st_mode)}, not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLargeError(errno.EFBIG, f"{p}: {what} is {st.st_size} bytes, over the cap of {max_bytes}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (checked before reading, and while reading in
    case the file grows)."""
    with open_regular(path, what, max_bytes) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLargeError(errno.EFBIG, f"{os.fspath(path)}: {what} grew over the cap of {max_bytes} bytes")
    return data


def read_regular_text(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> str:
    return read_regular(path, what, max_bytes).decode("utf-8")


# ------------------------------------------------------------------------------------------ writing


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Write `path` through a temporary file beside it, renamed into place when the block ends.

    On any failure (a full disk, an exception in the block) the temporary file is removed and `path`
    is left as it was: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = _tmp_name(path)
    f = open(tmp, "xb")
    try:
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that opens files by name (an encoder, a library's
    save); renamed to `path` when the block ends, removed (file or folder) on any failure."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def swap_dir(built: str | os.PathLike, final: str | os.PathLike, trash: str | os.PathLike) -> None:
    """Put the finished folder `built` at `final` by renames only: a folder already at `final` is moved to
    `trash` first and deleted afterwards. A kill at any moment leaves `final` whole, old or new (or, for a
    moment between the two renames, absent, with the old one whole at `trash`)."""
    final, trash = Path(final), Path(trash)
    import shutil

    shutil.rmtree(trash, ignore_errors=True)
    if final.exists():
        os.replace(final, trash)
    os.replace(built, final)
    shutil.rmtree(trash, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    with atomic_output(path, fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


__all__ = ["FileTooLargeError", "NotRegularFileError", "atomic_output", "atomic_path", "atomic_write_bytes",
           "atomic_write_text", "swap_dir",
           "describe_os_error", "file_kind", "open_regular", "read_regular", "read_regular_text",
           "regular_file_size"]
