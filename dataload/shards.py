"""The shard format: WebDataset-style tars written atomically and read with schema checks.

A shard is a POSIX tar whose members are named `<key>.<ext>`; consecutive members with the same key form
one sample. The writer produces byte-identical tars for identical input (fixed mtime/uid/gid/mode, members
of a sample sorted by extension). The reader is our own streaming tar parser rather than `tarfile`,
because `tarfile` silently ends iteration on a tar truncated at a header boundary, and because we must
refuse links, devices and path-like names before anything is returned. Nothing here ever unpickles.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from dataload.errors import ShardError

BLOCK = 512

CLIP_REQUIRED_MEMBERS = ("mp4", "json")
CLIP_REQUIRED_KEYS = (
    "clip_id", "source", "start_s", "end_s", "start_frame", "end_frame", "num_frames", "fps", "width",
    "height",
)

# A key is one path component without dots (the first dot separates key from extension, as in WebDataset).
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-:+@=,~%]+$")
_EXT_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def check_member_name(name: str) -> tuple[str, str]:
    """Split a member name into (key, ext); raise ValueError for anything path-like or malformed."""
    if not name or name.startswith(("/", "\\")) or "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"unsafe member name {name!r}")
    if re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"unsafe member name {name!r} (drive letter)")
    key, dot, ext = name.partition(".")
    if not dot or not _KEY_RE.match(key) or not _EXT_RE.match(ext):
        raise ValueError(f"malformed member name {name!r} (want <key>.<ext>)")
    return key, ext


# --------------------------------------------------------------------------------------------- writing


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
        self._file: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
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
        final = self._path(self.index)
        self._tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        self._file = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        self._count = 0
        self._keys = set()

    def _finish(self) -> None:
        assert self._tar is not None and self._file is not None and self._tmp is not None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._path(self.index)
        os.replace(self._tmp, final)
        self.written.append(final)
        self._tar = self._file = self._tmp = None
        self.index += 1

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        if self._closed:
            raise ShardError("ShardWriter is closed")
        if not members:
            raise ValueError(f"sample {key!r} has no members")
        if not _KEY_RE.match(key):
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
        if self._tar is not None:
            try:
                self._file.close()  # type: ignore[union-attr]
            finally:
                if self._tmp is not None and self._tmp.exists():
                    self._tmp.unlink()
            self._tar = self._file = self._tmp = None
        self._closed = True


# --------------------------------------------------------------------------------------------- reading


@dataclass
class MemberEntry:
    offset: int  # byte offset of the member's data in the shard
    size: int


@dataclass
class SampleEntry:
    key: str
    members: dict[str, MemberEntry] = field(default_factory=dict)


def _open_binary(path: str | os.PathLike) -> BinaryIO:
    p = os.fspath(path)
    if "://" in p:
        import fsspec

        return fsspec.open(p, "rb").open()
    return open(p, "rb")


def _parse_octal(field_bytes: bytes, shard: str, what: str) -> int:
    raw = field_bytes.rstrip(b"\0 ").strip()
    if not raw:
        return 0
    if field_bytes[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(field_bytes[1:], "big")
    try:
        return int(raw, 8)
    except ValueError:
        raise ShardError(f"corrupt shard {shard}: bad {what} field in a tar header") from None


def _walk_headers(f: BinaryIO, shard: str, *, read_data: bool) -> Iterator[tuple[str, int, int, bytes | None]]:
    """Yield (name, data_offset, size, data or None) per regular member; raise ShardError on anything else."""
    pos = 0
    long_name: str | None = None
    pax_name: str | None = None
    while True:
        hdr = f.read(BLOCK)
        if len(hdr) == 0:
            raise ShardError(f"truncated shard {shard}: ends without the end-of-archive marker at byte {pos}")
        if len(hdr) < BLOCK:
            raise ShardError(f"truncated shard {shard}: partial tar header at byte {pos}")
        pos += BLOCK
        if hdr.count(0) == BLOCK:
            return  # end-of-archive marker
        stored = _parse_octal(hdr[148:156], shard, "checksum")
        computed = sum(hdr[:148]) + 8 * 32 + sum(hdr[156:])
        if stored != computed:
            raise ShardError(f"corrupt shard {shard}: tar header checksum mismatch at byte {pos - BLOCK}")
        size = _parse_octal(hdr[124:136], shard, "size")
        typeflag = hdr[156:157]
        name = hdr[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if hdr[257:265] == b"ustar\x0000" and hdr[345] != 0:  # POSIX prefix field (GNU tars use it otherwise)
            name = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        if typeflag in (b"L", b"x", b"g", b"K"):
            data = f.read(padded)
            if len(data) < padded:
                raise ShardError(f"truncated shard {shard}: extended header cut at byte {pos}")
            pos += padded
            body = data[:size]
            if typeflag == b"L":
                long_name = body.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif typeflag == b"x":
                pax_name = _pax_path(body, shard) or pax_name
            elif typeflag == b"K":
                raise ShardError(f"hostile shard {shard}: link member (GNU long link name)")
            continue
        if long_name is not None:
            name, long_name = long_name, None
        if pax_name is not None:
            name, pax_name = pax_name, None
        if typeflag not in (b"0", b"\0", b"7"):
            kind = {b"1": "hard link", b"2": "symlink", b"3": "character device", b"4": "block device",
                    b"5": "directory", b"6": "fifo"}.get(typeflag, f"type {typeflag!r}")
            raise ShardError(f"hostile shard {shard}: member {name!r} is a {kind}; only regular files allowed")
        try:
            check_member_name(name)
        except ValueError as e:
            raise ShardError(f"hostile shard {shard}: {e}") from None
        data_offset = pos
        if read_data:
            data = f.read(padded)
            if len(data) < size:
                raise ShardError(f"truncated shard {shard}: member {name!r} cut at byte {pos + len(data)}")
            pos += padded
            yield name, data_offset, size, data[:size]
        else:
            f.seek(padded, io.SEEK_CUR)
            pos += padded
            yield name, data_offset, size, None


def _pax_path(body: bytes, shard: str) -> str | None:
    path = None
    i = 0
    while i < len(body):
        sp = body.find(b" ", i)
        if sp < 0:
            break
        try:
            n = int(body[i:sp])
        except ValueError:
            raise ShardError(f"corrupt shard {shard}: bad pax header") from None
        if n <= 0:
            raise ShardError(f"corrupt shard {shard}: bad pax header")
        rec = body[sp + 1:i + n - 1]
        k, _, v = rec.partition(b"=")
        if k == b"path":
            path = v.decode("utf-8", "replace")
        elif k in (b"linkpath",):
            raise ShardError(f"hostile shard {shard}: pax link path")
        i += n
    return path


def read_shard(path: str | os.PathLike, *, required: tuple[str, ...] | list[str] = ()) -> Iterator[dict[str, Any]]:
    """Yield samples `{"__key__", "__shard__", ext: bytes, ...}` in tar order.

    Raises ShardError naming the shard on a truncated or corrupt tar, a hostile member (link, device,
    path-like name), a key split across non-consecutive members, or a sample missing a `required` member.
    Samples before the fault have already been yielded.
    """
    shard = os.fspath(path)
    try:
        f = _open_binary(shard)
    except FileNotFoundError:
        raise ShardError(f"shard not found: {shard}") from None
    with f:
        current: dict[str, Any] | None = None
        seen: set[str] = set()
        try:
            for name, _off, _size, data in _walk_headers(f, shard, read_data=True):
                key, ext = check_member_name(name)
                if current is not None and current["__key__"] != key:
                    _check_required(current, required, shard)
                    yield current
                    current = None
                if current is None:
                    if key in seen:
                        raise ShardError(f"corrupt shard {shard}: key {key!r} appears in two separate places")
                    seen.add(key)
                    current = {"__key__": key, "__shard__": shard}
                if ext in current:
                    raise ShardError(f"corrupt shard {shard}: member {name!r} appears twice")
                current[ext] = data
        except OSError as e:
            raise ShardError(f"cannot read shard {shard}: {e}") from None
        if current is not None:
            _check_required(current, required, shard)
            yield current


def _check_required(sample: dict[str, Any], required, shard: str) -> None:
    missing = [m for m in required if m not in sample]
    if missing:
        raise ShardError(f"shard {shard}: sample {sample['__key__']!r} misses member(s) {', '.join(missing)}")


def index_shard(path: str | os.PathLike) -> tuple[list[SampleEntry], str | None]:
    """Scan only the tar headers: the samples with their member offsets, plus the error that stopped the
    scan (None when the shard is whole). Entries before the error are complete and safe to read."""
    shard = os.fspath(path)
    entries: list[SampleEntry] = []
    try:
        f = _open_binary(shard)
    except (FileNotFoundError, OSError) as e:
        return [], f"cannot open shard {shard}: {e}"
    with f:
        seen: set[str] = set()
        try:
            for name, off, size, _ in _walk_headers(f, shard, read_data=False):
                key, ext = check_member_name(name)
                if not entries or entries[-1].key != key:
                    if key in seen:
                        raise ShardError(f"corrupt shard {shard}: key {key!r} appears in two separate places")
                    seen.add(key)
                    entries.append(SampleEntry(key))
                if ext in entries[-1].members:
                    raise ShardError(f"corrupt shard {shard}: member {name!r} appears twice")
                entries[-1].members[ext] = MemberEntry(off, size)
        except ShardError as e:
            return _drop_cut_tail(entries, f, shard), str(e)
        except OSError as e:
            return _drop_cut_tail(entries, f, shard), f"cannot read shard {shard}: {e}"
    return entries, None


def _drop_cut_tail(entries: list[SampleEntry], f: BinaryIO, shard: str) -> list[SampleEntry]:
    """After a fault the last sample may miss members that came after the fault, or its last member may
    lie past the end of the file (seeking does not notice); drop it unless every byte is there."""
    if not entries:
        return entries
    try:
        f.seek(0, io.SEEK_END)
        total = f.tell()
    except OSError:
        return entries[:-1]
    out = [e for e in entries if all(m.offset + m.size <= total for m in e.members.values())]
    return out[:-1] if out and out[-1] is entries[-1] else out


def read_members(f: BinaryIO, entry: SampleEntry, exts: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """Read the members `exts` (all when None) of an indexed sample from an open shard file."""
    out: dict[str, bytes] = {}
    for ext, m in sorted(entry.members.items(), key=lambda kv: kv[1].offset):
        if exts is not None and ext not in exts:
            continue
        f.seek(m.offset)
        data = f.read(m.size)
        if len(data) != m.size:
            raise ShardError(f"truncated member {entry.key}.{ext}")
        out[ext] = data
    return out


# --------------------------------------------------------------------------------------------- schema


def validate_clip_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Check a curated clip sample's members and JSON keys; return the parsed JSON. Extra ones are fine."""
    where = f"sample {sample.get('__key__', '?')!r} of {sample.get('__shard__', '?')}"
    missing = [m for m in CLIP_REQUIRED_MEMBERS if m not in sample]
    if missing:
        raise ShardError(f"{where} misses member(s) {', '.join(missing)}")
    meta = parse_json_member(sample["json"], where)
    missing_keys = [k for k in CLIP_REQUIRED_KEYS if k not in meta]
    if missing_keys:
        raise ShardError(f"{where}: clip JSON misses key(s) {', '.join(missing_keys)}")
    return meta


def parse_json_member(data: bytes, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"{where}: JSON member is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(meta, dict):
        raise ShardError(f"{where}: JSON member is not an object")
    return meta


def list_shards(folder: str | os.PathLike) -> list[str]:
    """The `*.tar` shards of a folder (local or fsspec URL), sorted by name; hidden/temporary ones skipped."""
    p = os.fspath(folder)
    if "://" in p:
        import fsspec

        fs, root = fsspec.core.url_to_fs(p)
        proto = p.split("://", 1)[0]
        names = sorted(x for x in fs.ls(root, detail=False) if x.endswith(".tar")
                       and not os.path.basename(x).startswith("."))
        return [f"{proto}://{n}" if "://" not in n else n for n in names]
    return sorted(str(x) for x in Path(p).glob("*.tar") if not x.name.startswith("."))
