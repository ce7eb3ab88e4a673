"""The shard format: WebDataset-style tars written atomically (dataload.shard_writer) and read here with
schema checks (the clip record's, dataload.clip_record).

A shard is a POSIX tar whose members are named `<key>.<ext>`; consecutive members with the same key form
one sample. The reader is our own tar parser rather than `tarfile`, because
`tarfile` silently ends iteration on a tar truncated at a header boundary, reads whatever size a header
declares, and because we must refuse links, devices and path-like names before anything is returned.
`read_shard` (streaming, with the bytes) and `scan_shard`/`index_shard` (headers only, for the loader)
share one scanner, so they keep and refuse the same samples; what a damaged or hostile shard costs is
spelled out above `read_shard`. Only regular files are opened. Nothing here ever unpickles.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# The shard format's public API lives on this module: the writer and the clip-sample check are
# re-exported from where they are defined (dataload.shard_writer, dataload.clip_record).
from dataload.clip_record import (
    CLIP_REQUIRED_KEYS,
    CLIP_REQUIRED_MEMBERS,
    check_clip_facts,
    validate_clip_sample,
)
from dataload.errors import ShardError
from dataload.files import NotRegularFileError, describe_os_error, open_regular, regular_file_size
from dataload.shard_writer import ShardWriter, check_member_name
from dataload.strict_json import loads_strict, parse_json_member, show

__all__ = ["CLIP_REQUIRED_KEYS", "CLIP_REQUIRED_MEMBERS", "ShardWriter", "check_clip_facts", "check_member_name",
           "index_shard", "list_shards", "loads_strict", "parse_json_member", "read_members", "read_shard",
           "scan_shard", "validate_clip_sample"]

BLOCK = 512

# --------------------------------------------------------------------------------------------- reading
#
# What a damaged or hostile shard costs (the rules read_shard and index_shard share, one scanner):
#
# * A member whose header is valid but whose name or kind is refused (a link, a device, a FIFO, a
#   directory, a sparse file, a path-like or absolute name, a pax header with a link path, a member over
#   its size cap, a duplicate member) costs its own sample only: its data is skipped by its declared
#   size and the scan goes on. A member whose name is unusable (no key can be read from it) is reported
#   on its own and joins no sample. A key that comes back after other samples is refused there (its
#   first run of members stands).
# * A fault in the tar structure itself ends the scan: a header whose checksum or size field is bad (its
#   size, so the next header's place, cannot be trusted) or a truncation (the file ends inside a header,
#   inside a member's data, or without the end-of-archive marker). Every sample before the fault is
#   kept. The sample in progress at the fault is kept when every member of it that was read is whole
#   (a member after the fault may be missing: required members are still checked); a member whose header
#   was read and whose data is cut drops its sample. A file that ends inside the end-of-archive marker
#   has lost nothing and is whole.
# * Sizes are checked before anything is read: a member that declares more bytes than the file holds is
#   a truncation; one over its cap (`max_member_bytes`, `max_small_member_bytes` for .json/.txt) is
#   refused without being read, whatever the file's size (a sparse file can be huge and empty).
# Nothing here ever deserialises a member: members are bytes.

DEFAULT_MAX_MEMBER_BYTES = 1 << 30  # a clip or a latent file
DEFAULT_MAX_SMALL_MEMBER_BYTES = 16 << 20  # .json and .txt members: metadata and captions
SMALL_MEMBER_EXTS = ("json", "txt")
MAX_EXTENDED_HEADER_BYTES = 1 << 20  # a GNU long name or a pax header
_MAX_SPARSE_BLOCKS = 4096

_REGULAR = (b"0", b"\0", b"7")
_KINDS = {b"1": "hard link", b"2": "symbolic link", b"3": "character device", b"4": "block device",
          b"5": "directory", b"6": "FIFO", b"S": "sparse file", b"D": "directory (GNU dump)",
          b"M": "multi-volume continuation", b"V": "volume label", b"N": "old GNU long name"}
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # POSIX: no data blocks follow these headers


@dataclass
class MemberEntry:
    offset: int  # byte offset of the member's data in the shard
    size: int


@dataclass
class SampleEntry:
    key: str
    members: dict[str, MemberEntry] = field(default_factory=dict)


@dataclass
class ShardScan:
    """What `scan_shard` found: the whole samples, the refused ones, and the fault that ended the scan."""

    shard: str
    entries: list[SampleEntry]
    skipped: list[tuple[str, str]]  # ("<shard>:<key>" or "<shard>:<'member name'>", reason)
    error: str | None  # the structural fault that ended the scan early; None when the tar ends properly

    def summary(self) -> str | None:
        """One line naming everything lost, or None when nothing was."""
        parts = []
        if self.skipped:
            names = "; ".join(f"{n[len(self.shard) + 1:] if n.startswith(self.shard + ':') else n} ({r})"
                              for n, r in self.skipped[:3])
            more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            parts.append(f"shard {self.shard}: {len(self.skipped)} sample(s) refused: {names}{more}")
        if self.error is not None:
            parts.append(self.error)
        return "; ".join(parts) if parts else None


def member_cap(ext: str, max_member_bytes: int, max_small_member_bytes: int) -> int:
    return max_small_member_bytes if ext.rsplit(".", 1)[-1].lower() in SMALL_MEMBER_EXTS else max_member_bytes


def _open_binary(path: str | os.PathLike) -> BinaryIO:
    """Open a shard for reading: local paths (and file:// URLs) only when they are regular files (a FIFO
    or a device would block or never end), other fsspec URLs through fsspec."""
    p = os.fspath(path)
    if "://" in p:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        fs, local = fsspec.core.url_to_fs(p)
        if isinstance(fs, LocalFileSystem):
            return open_local(local, "shard")
        return fs.open(local, "rb")
    return open_local(p, "shard")


def open_local(path: str, what: str, max_bytes: int | None = None) -> BinaryIO:
    """`open_regular`, with the kind named also where the open itself cannot tell it (a socket)."""
    try:
        return open_regular(path, what, max_bytes)
    except NotRegularFileError as e:
        if e.errno == errno.ENXIO:
            regular_file_size(path, what)  # raises naming the kind
        raise


def _file_size(f: BinaryIO) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return end


def _parse_number(field_bytes: bytes) -> int | None:
    """A tar numeric field (octal, or GNU base-256 for big values); None when it is not a number."""
    if field_bytes[:1] == b"\x80":  # GNU base-256, positive
        return int.from_bytes(field_bytes[1:], "big")
    if field_bytes[:1] == b"\xff":  # base-256 negative: never a valid size
        return None
    raw = field_bytes.split(b"\0", 1)[0].strip(b" ")
    if not raw:
        return 0
    if not all(48 <= c <= 55 for c in raw):  # digits 0-7 only (int() would take '-', '+', '_')
        return None
    return int(raw, 8)


def _checksum_ok(hdr: bytes) -> bool:
    stored = _parse_number(hdr[148:156])
    if stored is None:
        return False
    rest = hdr[:148] + b" " * 8 + hdr[156:]
    unsigned = sum(rest)
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for c in rest if c > 127)  # some old tars sum signed bytes


def _is_header_or_end(block: bytes) -> bool:
    return len(block) == BLOCK and (block.count(0) == BLOCK or _checksum_ok(block))


@dataclass
class _Member:
    name: str
    key: str | None  # None: the name is unusable; the member joins no sample
    ext: str
    offset: int
    size: int
    data: bytes | None
    problem: str | None  # why the member (and its sample) is refused


@dataclass
class _End:
    error: str | None = None
    cut_key: str | None = None  # the key of a member whose data the truncation cut


def _pax_records(body: bytes) -> dict[bytes, bytes]:
    """Parse 'LEN key=value\\n' records strictly; ValueError on anything malformed."""
    out: dict[bytes, bytes] = {}
    i = 0
    while i < len(body):
        if body[i:].strip(b"\0") == b"":
            break
        sp = body.find(b" ", i, i + 21)
        if sp < 0 or not body[i:sp].isdigit():
            raise ValueError("bad record length")
        n = int(body[i:sp])
        if n <= sp - i + 1 or i + n > len(body) or body[i + n - 1:i + n] != b"\n":
            raise ValueError("bad record length")
        k, eq, v = body[sp + 1:i + n - 1].partition(b"=")
        if not eq or not k:
            raise ValueError("record without key=value")
        out[k] = v
        i += n
    return out


def _walk_members(f: BinaryIO, shard: str, total: int, *, read_data: bool, max_member_bytes: int,
                  max_small_member_bytes: int) -> Generator[_Member, None, _End]:
    """Yield every member that has a usable header; return how the scan ended (see the rules above)."""
    pos = 0
    f.seek(0)
    long_name: str | None = None
    pax_size: int | None = None
    problem: str | None = None  # from an extended header, for the member it describes
    while True:
        if f.tell() != pos:
            f.seek(pos)
        hdr = f.read(BLOCK)
        if hdr.count(0) == len(hdr) and hdr:  # end-of-archive marker (a cut inside it loses nothing)
            return _End()
        if len(hdr) == 0:
            return _End(f"truncated shard {shard}: ends at byte {pos} without the end-of-archive marker")
        if len(hdr) < BLOCK:
            return _End(f"truncated shard {shard}: cut inside a tar header at byte {pos}")
        if not _checksum_ok(hdr):
            return _End(f"corrupt shard {shard}: tar header checksum mismatch at byte {pos}")
        size = _parse_number(hdr[124:136])
        if size is None:
            return _End(f"corrupt shard {shard}: bad size field in the tar header at byte {pos}")
        typeflag = hdr[156:157]
        data_at = pos + BLOCK
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        if typeflag in (b"L", b"K", b"x", b"g"):
            if data_at + size > total:
                return _End(f"truncated shard {shard}: extended header at byte {pos} cut")
            body = b""
            if size > MAX_EXTENDED_HEADER_BYTES:
                problem = problem or f"has an extended header of {size} bytes (over {MAX_EXTENDED_HEADER_BYTES})"
            elif typeflag != b"g":
                f.seek(data_at)
                body = f.read(size)
            pos = data_at + padded
            if typeflag == b"L" and body:
                long_name = body.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            elif typeflag == b"K":
                problem = problem or "is a link (GNU long link name)"
            elif typeflag == b"x" and body:
                try:
                    rec = _pax_records(body)
                except ValueError as e:
                    problem = problem or f"has a bad pax header ({e})"
                    continue
                if b"path" in rec:
                    long_name = rec[b"path"].decode("utf-8", "backslashreplace")
                if b"linkpath" in rec:
                    problem = problem or "is a link (pax link path)"
                if any(k.startswith(b"GNU.sparse") for k in rec):
                    problem = problem or "is a sparse file"
                if b"size" in rec:
                    if not rec[b"size"].isdigit():
                        problem = problem or "has a bad pax size"
                    else:
                        pax_size = int(rec[b"size"])
            continue
        # A member header.
        name = hdr[0:100].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
        if hdr[257:265] == b"ustar\x0000" and hdr[345] != 0:  # POSIX prefix field (GNU tars use it otherwise)
            name = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "backslashreplace") + "/" + name
        if long_name is not None:
            name = long_name
        if pax_size is not None and typeflag in _REGULAR:
            size = pax_size
            padded = (size + BLOCK - 1) // BLOCK * BLOCK
        long_name, pax_size, why, problem = None, None, problem, None
        if typeflag == b"S" and hdr[482]:  # old GNU sparse: extension blocks of the sparse map come first
            for _ in range(_MAX_SPARSE_BLOCKS):
                f.seek(data_at)
                ext_block = f.read(BLOCK)
                if len(ext_block) < BLOCK:
                    return _End(f"truncated shard {shard}: sparse header at byte {data_at} cut")
                data_at += BLOCK
                if not ext_block[504]:
                    break
            else:
                return _End(f"corrupt shard {shard}: endless sparse map at byte {pos}")
        if typeflag not in _REGULAR:
            kind = _KINDS.get(typeflag, f"member of type {typeflag!r}")
            why = why or f"is a {kind}; only regular files are allowed"
            if typeflag in _NO_DATA and size > 0:
                # POSIX stores no data for these; some writers do. Whichever the next header says.
                f.seek(data_at)
                if _is_header_or_end(f.read(BLOCK)):
                    size = padded = 0
        if typeflag == b"5" and name.endswith("/"):
            name = name[:-1]  # a directory's own slash: the rest still says whose sample it is
        try:
            key, ext = check_member_name(name)
        except ValueError as e:
            key, ext, why = None, "", str(e) if why is None else f"{e}; {why}"
        else:
            why = None if why is None else f"member {show(name)} {why}"
        if data_at + size > total:
            return _End(f"truncated shard {shard}: member {show(name)} at byte {pos} declares {size} bytes, "
                        f"past the end of the file ({total} bytes)", cut_key=key)
        cap = member_cap(ext, max_member_bytes, max_small_member_bytes)
        if why is None and size > cap:
            why = f"member {show(name)} declares {size} bytes, over the cap of {cap}"
        data = None
        if read_data and why is None:
            if f.tell() != data_at:
                f.seek(data_at)
            data = f.read(size)
            if len(data) < size:  # the file shrank since its size was taken
                return _End(f"truncated shard {shard}: member {show(name)} cut at byte {data_at + len(data)}",
                            cut_key=key)
        yield _Member(name, key, ext, data_at, size, data, why)
        pos = data_at + padded


def _scan(f: BinaryIO, shard: str, *, read_data: bool, required: tuple[str, ...] | list[str] = (),
          max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
          max_small_member_bytes: int = DEFAULT_MAX_SMALL_MEMBER_BYTES,
          ) -> Generator[tuple[str, Any, Any], None, str | None]:
    """Group members into samples. Yields ("sample", SampleEntry, {ext: bytes} or None) or ("skip", name,
    reason); returns the structural fault (None when the tar is whole)."""
    walker = _walk_members(f, shard, _file_size(f), read_data=read_data, max_member_bytes=max_member_bytes,
                           max_small_member_bytes=max_small_member_bytes)
    seen: set[str] = set()
    cur: SampleEntry | None = None
    cur_data: dict[str, bytes] = {}
    cur_problem: str | None = None

    def finish():
        if cur is None:
            return None
        name = f"{shard}:{cur.key}"
        if cur_problem is not None:
            return ("skip", name, cur_problem)
        missing = [m for m in required if m not in cur.members]
        if missing:
            return ("skip", name, f"misses member(s) {', '.join(missing)}")
        return ("sample", cur, cur_data if read_data else None)

    while True:
        try:
            m = next(walker)
        except StopIteration as stop:
            end: _End = stop.value
            break
        if m.key is None:
            yield ("skip", f"{shard}:{show(m.name)}", m.problem or "unusable member name")
            continue
        if cur is None or cur.key != m.key:
            ev = finish()
            if ev is not None:
                yield ev
            cur, cur_data, cur_problem = SampleEntry(m.key), {}, None
            if m.key in seen:
                cur_problem = f"key {m.key!r} appears again after other samples (its first members are kept)"
            seen.add(m.key)
        if m.problem is not None:
            cur_problem = cur_problem or m.problem
        elif m.ext in cur.members:
            cur_problem = cur_problem or f"member {show(m.name)} appears twice"
        else:
            cur.members[m.ext] = MemberEntry(m.offset, m.size)
            if m.data is not None:
                cur_data[m.ext] = m.data
    if end.error is not None and end.cut_key is not None:
        if cur is not None and cur.key == end.cut_key:
            cur_problem = cur_problem or "cut by the truncation"
        else:
            ev = finish()
            if ev is not None:
                yield ev
            cur, cur_problem = SampleEntry(end.cut_key), "cut by the truncation"
    ev = finish()
    if ev is not None:
        yield ev
    return end.error


def _shard_error(shard: str, exc: OSError) -> ShardError:
    if isinstance(exc, FileNotFoundError):
        return ShardError(f"shard not found: {shard}")
    return ShardError(f"cannot read shard {shard}: {describe_os_error(exc)}")


def read_shard(path: str | os.PathLike, *, required: tuple[str, ...] | list[str] = (),
               skipped: list[tuple[str, str]] | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
               max_small_member_bytes: int = DEFAULT_MAX_SMALL_MEMBER_BYTES) -> Iterator[dict[str, Any]]:
    """Yield samples `{"__key__", "__shard__", ext: bytes, ...}` in tar order (the rules above).

    A refused sample (a hostile or oversized member, a duplicate, a missing `required` member) is left out:
    with a `skipped` list it is appended there as (name, reason) and the iteration goes on; without one,
    ShardError is raised after every good sample has been yielded. A structural fault (truncation, a bad
    header) raises ShardError naming the shard after the samples before it.
    """
    shard = os.fspath(path)
    try:
        f = _open_binary(shard)
    except OSError as e:
        raise _shard_error(shard, e) from None
    refused: list[tuple[str, str]] = []
    with f:
        scan = _scan(f, shard, read_data=True, required=required, max_member_bytes=max_member_bytes,
                     max_small_member_bytes=max_small_member_bytes)
        while True:
            try:
                ev = next(scan)
            except StopIteration as stop:
                error = stop.value
                break
            except OSError as e:
                raise _shard_error(shard, e) from None
            if ev[0] == "skip":
                (skipped if skipped is not None else refused).append((ev[1], ev[2]))
            else:
                entry, data = ev[1], ev[2]
                yield {"__key__": entry.key, "__shard__": shard, **data}
    summary = ShardScan(shard, [], refused, error).summary()
    if summary is not None:
        raise ShardError(summary)


def scan_shard(path: str | os.PathLike | BinaryIO, *, shard: str | None = None,
               max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
               max_small_member_bytes: int = DEFAULT_MAX_SMALL_MEMBER_BYTES) -> ShardScan:
    """Scan only the tar headers (a path, or an open file named `shard`): the samples with their member
    offsets, the refused samples with reasons, and the fault that ended the scan. Entries are whole."""
    if isinstance(path, (str, os.PathLike)):
        name = os.fspath(path)
        try:
            f = _open_binary(name)
        except OSError as e:
            return ShardScan(name, [], [], str(_shard_error(name, e)))
        with f:
            return scan_shard(f, shard=name, max_member_bytes=max_member_bytes,
                              max_small_member_bytes=max_small_member_bytes)
    name = shard if shard is not None else str(getattr(path, "name", "?"))
    entries: list[SampleEntry] = []
    skipped: list[tuple[str, str]] = []
    scan = _scan(path, name, read_data=False, max_member_bytes=max_member_bytes,
                 max_small_member_bytes=max_small_member_bytes)
    while True:
        try:
            ev = next(scan)
        except StopIteration as stop:
            return ShardScan(name, entries, skipped, stop.value)
        except OSError as e:
            return ShardScan(name, entries, skipped, str(_shard_error(name, e)))
        if ev[0] == "skip":
            skipped.append((ev[1], ev[2]))
        else:
            entries.append(ev[1])


def index_shard(path: str | os.PathLike, **caps: int) -> tuple[list[SampleEntry], str | None]:
    """(whole samples, None) for a whole shard; else the samples kept and one line naming what was lost
    (refused samples and the fault that ended the scan). `scan_shard` gives the details."""
    scan = scan_shard(path, **caps)
    return scan.entries, scan.summary()


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


def list_shards(folder: str | os.PathLike) -> list[str]:
    """The `*.tar` entries of a folder (local or fsspec URL), sorted by name; hidden/temporary ones skipped.
    Entries are listed whatever their kind: readers refuse those that are not regular files."""
    p = os.fspath(folder)
    if "://" in p:
        import fsspec

        fs, root = fsspec.core.url_to_fs(p)
        proto = p.split("://", 1)[0]
        names = sorted(x for x in fs.ls(root, detail=False) if x.endswith(".tar")
                       and not os.path.basename(x).startswith("."))
        return [f"{proto}://{n}" if "://" not in n else n for n in names]
    try:
        return sorted(str(x) for x in Path(p).glob("*.tar") if not x.name.startswith("."))
    except OSError:
        return []
