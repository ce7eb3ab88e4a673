"""One run per folder: an exclusive lock on a file inside the folder (a curation OUT, a training RUN).

The lock is a kernel `flock` on an open file, so it ends with the process that holds it: a run killed
with -9 leaves no stale lock to clean up, and the next run takes it over at once. Beside the lock, the
file records its holder (command, pid, host, start time) so a refused run can say who holds the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class FolderLockedError(Exception):
    """Another live process holds the folder's lock; the message names it."""


class FolderLock:
    """`with FolderLock(folder, "lock"):` holds the folder for this process (re-entrant within it)."""

    def __init__(self, folder: str | os.PathLike, name: str = ".lock", command: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.command = command or (" ".join([Path(sys.argv[0]).name, *sys.argv[1:2]]) if sys.argv else "python")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise FolderLockedError(f"{self.folder} is in use by another run ({holder}); wait for it to end "
                                    "or choose another folder") from None
        except BaseException:
            os.close(fd)
            raise
        record = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass  # the lock itself is what counts; the record only helps the message
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __getstate__(self):  # a lock never travels to a worker process
        raise TypeError("FolderLock cannot be pickled: the lock belongs to the process that took it")


def _describe_holder(fd: int) -> str:
    try:
        data = os.pread(fd, 4096, 0)
        rec = json.loads(data.decode("utf-8", "replace") or "{}")
        return f"{rec.get('command', '?')}, pid {rec.get('pid', '?')} on {rec.get('host', '?')} since {rec.get('started', '?')}"
    except (OSError, ValueError):
        return "holder unknown"


__all__ = ["FolderLock", "FolderLockedError"]
