"""The shard writer: WebDataset-style POSIX tars, byte-identical for identical input (fixed mtime, uid, gid
and mode; the members of a sample sorted by extension), each written atomically (dataload.files)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from dataload.errors import ShardError
from dataload.files import atomic_output

# A key is one path component without dots (the first dot separates key from extension, as in WebDataset).
# Matched whole (fullmatch: `$` would let a trailing newline through).
KEY_RE = re.compile(r"[A-Za-z0-9_\-:+@=,~%]+")
_EXT_RE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


def check_member_name(name: str) -> tuple[str, str]:
    """Split a member name into (key, ext); raise ValueError for anything path-like or malformed."""
    if not name or name.startswith(("/", "\\")) or "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"unsafe member name {name!r}")
    if re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"unsafe member name {name!r} (drive letter)")
    key, dot, ext = name.partition(".")
    if not dot or not KEY_RE.fullmatch(key) or not _EXT_RE.fullmatch(ext):
        raise ValueError(f"malformed member name {name!r} (want <key>.<ext>)")
    return key, ext


class ShardWriter:
    """Write samples into numbered shards `<prefix>NNNNNN.tar`, each at most `max_samples_per_shard`.

    Each shard is written under a temporary name and renamed into place when it is full or on close, so a
    reader never sees a half-written shard. Leaving the context with an exception discards the open shard.
    """

    def __init__(self, folder: str | os.PathLike, *, max_samples_per_shard: int = 1000, prefix: str = "shard-",
                 start_index: int = 0):
        if max_samples_per_shard < 1:
            raise ValueError("max_samples_per_shard must be >= 1")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_samples = max_samples_per_shard
        self.prefix = prefix
        self.index = start_index
        self.written: list[Path] = []
        self._shard: contextlib.ExitStack | None = None  # holds the open atomic output of the current shard
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._keys: set[str] = set()
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _path(self, index: int) -> Path:
        return self.folder / f"{self.prefix}{index:06d}.tar"

    def _open(self) -> None:
        # A fresh temporary name opened exclusively: whatever sits in the folder (a stale file, a FIFO) is
        # never opened or overwritten.
        stack = contextlib.ExitStack()
        f: BinaryIO = stack.enter_context(atomic_output(self._path(self.index)))
        self._tar = tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT)
        self._shard = stack
        self._count = 0
        self._keys = set()

    def _finish(self) -> None:
        assert self._tar is not None and self._shard is not None
        self._tar.close()
        self._shard.close()  # flush, fsync, rename into place
        self.written.append(self._path(self.index))
        self._tar = self._shard = None
        self.index += 1

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        if self._closed:
            raise ShardError("ShardWriter is closed")
        if not members:
            raise ValueError(f"sample {key!r} has no members")
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"unsafe or malformed sample key {key!r} (no dots, slashes or spaces)")
        for ext in members:
            check_member_name(f"{key}.{ext}")
        if self._tar is None:
            self._open()
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r} in shard {self._path(self.index).name}")
        self._keys.add(key)
        assert self._tar is not None
        for ext in sorted(members):
            data = members[ext]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"member {key}.{ext} must be bytes, got {type(data).__name__}")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(bytes(data)))
        self._count += 1
        if self._count >= self.max_samples:
            self._finish()

    def close(self) -> list[Path]:
        if not self._closed:
            if self._tar is not None:
                self._finish()
            self._closed = True
        return list(self.written)

    def abort(self) -> None:
        """Discard the shard being written (finished shards stay)."""
        if self._shard is not None:
            stack, self._shard, self._tar = self._shard, None, None
            # leaving the atomic output with an error removes its temporary file
            stack.__exit__(ShardError, ShardError("aborted"), None)
        self._closed = True
