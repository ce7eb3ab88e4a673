"""Finding a dataset's shards and indexing their samples.

A source is a curated OUT, its `shards/` folder, or a latent folder (told apart by `dataset.json`), local
or an fsspec URL. Indexing reads only tar headers and the small members (the clip JSON, the header of a
safetensors file), never the video bytes, with a thread pool over shards so many shards do not serialise
on I/O. What is left out of the index, each reported in `skipped` with its name and reason:

* a shard that is not a regular file (a FIFO, a socket, a device, a directory, a symlink loop or a
  dangling link): refused before it is opened; when no shard remains, `resolve_source` raises ValueError;
* a refused sample of a shard (a hostile or oversized member, see `dataload.shards`), and the rest of a
  truncated or corrupt shard;
* a curated sample whose JSON is invalid, holds a non-finite number anywhere (NaN, Infinity, 1e400), or
  whose required keys are missing, of the wrong type or out of range (`dataload.clip_record.check_clip_facts`),
  or whose declared frame is over `max_frame_pixels`;
* a latent sample whose safetensors header is unreadable or inconsistent: tensors missing, of the wrong
  dtype or rank, data offsets that do not match the shapes, a text mask that does not match the text.

So the planner only ever sees finite, sane numbers. Non-finite latent values are found when the sample is
loaded (the index does not read tensor data) and skip it there.
"""

from __future__ import annotations

import errno
import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dataload.clip_record import CLIP_REQUIRED_MEMBERS, check_clip_facts
from dataload.errors import ShardError
from dataload.files import (
    FileTooLargeError,
    NotRegularFileError,
    describe_os_error,
    read_regular,
    regular_file_size,
)
from dataload.shards import (
    DEFAULT_MAX_MEMBER_BYTES,
    DEFAULT_MAX_SMALL_MEMBER_BYTES,
    SampleEntry,
    _open_binary,
    list_shards,
    read_members,
    scan_shard,
)
from dataload.strict_json import loads_strict, parse_json_member

LATENT_MEMBER = "latents.safetensors"
LATENT_TENSORS = ("latents", "text", "text_mask")
MAX_DATASET_JSON_BYTES = 16 << 20
MAX_SAFETENSORS_HEADER_BYTES = 16 << 20

# safetensors dtypes -> bytes per element; the latents and text must be floats, the mask bool or integer.
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_MASK_DTYPES = ("BOOL", "U8", "I8", "I16", "I32", "I64")
_LATENT_NDIM = {"latents": 4, "text": 2, "text_mask": 1}  # (C, T, H, W), (L, D), (L,)

@dataclass
class SampleInfo:
    key: str
    entry: SampleEntry
    facts: dict[str, Any]
    shapes: dict[str, list[int]] = field(default_factory=dict)  # latent tensors' shapes
    dtypes: dict[str, str] = field(default_factory=dict)  # latent tensors' safetensors dtypes


@dataclass
class SourceIndex:
    path: str
    kind: str  # "curated" | "latent"
    shards: list[str]
    samples: list[list[SampleInfo]]  # per shard, tar order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (shard or shard:key, reason)

    @property
    def num_samples(self) -> int:
        return sum(len(s) for s in self.samples)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if "://" in base else os.path.join(base, name)


def _local(path: str) -> str | None:
    """The local path of `path` (a plain path or a URL of the local file system), else None."""
    if "://" not in path:
        return path
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, p = fsspec.core.url_to_fs(path)
    return p if isinstance(fs, LocalFileSystem) else None


def _exists(path: str) -> bool:
    local = _local(path)
    if local is not None:
        return os.path.lexists(local)  # a symlink loop or a dangling link is there, and refused when read
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p)


def _read_capped(path: str, cap: int, what: str) -> bytes:
    local = _local(path)
    if local is not None:
        regular_file_size(local, what)  # names the kind of what is not a regular file (a socket too)
        return read_regular(local, what, cap)
    import fsspec

    with fsspec.open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise FileTooLargeError(errno.EFBIG, f"{path}: {what} is over the cap of {cap} bytes")
    return data


def _read_dataset_json(ds: str) -> Any:
    try:
        data = _read_capped(ds, MAX_DATASET_JSON_BYTES, "file")
    except OSError as e:
        raise ValueError(describe_os_error(e) if isinstance(e, (NotRegularFileError, FileTooLargeError))
                         else f"{ds}: {describe_os_error(e, 'cannot read')}") from None
    try:
        return loads_strict(data)
    except (ValueError, RecursionError) as e:
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ValueError(f"{ds} is not valid JSON: {msg}") from None


def _shard_problem(shard: str) -> str | None:
    """Why a listed shard cannot be read (not a regular file, gone), or None when it is fine."""
    local = _local(shard)
    if local is None:
        return None  # remote: refused (if at all) when opened
    try:
        regular_file_size(local, "shard")
    except OSError as e:
        msg = describe_os_error(e)
        prefix = f"{local}: "
        return msg[len(prefix):] if msg.startswith(prefix) else msg
    return None


def _regular_shards(shards: list[str], skipped: list[tuple[str, str]]) -> list[str]:
    out = []
    for shard in shards:
        why = _shard_problem(shard)
        if why is None:
            out.append(shard)
        else:
            skipped.append((shard, f"shard refused: {why}"))
    return out


def _no_shards(path: str, refused: list[tuple[str, str]]) -> ValueError:
    if not refused:
        return ValueError(f"no shards (*.tar) found in {path}")
    first = "; ".join(f"{os.path.basename(n)} ({r})" for n, r in refused[:3])
    more = f"; and {len(refused) - 3} more" if len(refused) > 3 else ""
    return ValueError(f"no readable shards in {path}: {len(refused)} refused: {first}{more}")


def resolve_source(path: str, skipped: list[tuple[str, str]] | None = None) -> tuple[str, list[str]]:
    """(kind, shard paths) of a dataset folder; FileNotFoundError / ValueError with one clear line.

    Listed shards that are not regular files are left out; pass a `skipped` list to learn which, with
    their reasons. When none remains, ValueError. A dataset.json that is not a regular file, is over
    16 MiB or is not valid JSON is a ValueError too (it says what the folder is: it cannot be guessed)."""
    path = os.fspath(path)
    if not _exists(path):
        raise FileNotFoundError(f"dataset not found: {path}")
    refused: list[tuple[str, str]] = []
    candidates = [(path, _join(path, "shards")), (path, path)]
    parent = os.path.dirname(path.rstrip("/"))
    if parent:
        candidates.append((parent, path))  # a curated OUT's shards/ folder
    for meta_dir, shard_dir in candidates:
        ds = _join(meta_dir, "dataset.json")
        if _exists(ds) and _exists(shard_dir):
            info = _read_dataset_json(ds)
            kind = info.get("kind") if isinstance(info, dict) else None
            if kind not in ("curated", "latent"):
                raise ValueError(f"{ds}: kind must be 'curated' or 'latent', got {str(kind)[:40]!r}")
            listed = list_shards(shard_dir)
            shards = _regular_shards(listed, refused)
            if shards:
                if skipped is not None:
                    skipped.extend(refused)
                return kind, shards
    refused.clear()
    listed = list_shards(path)
    if not listed and _exists(_join(path, "shards")):
        listed = list_shards(_join(path, "shards"))
    shards = _regular_shards(listed, refused)
    if not shards:
        raise _no_shards(path, refused)
    if skipped is not None:
        skipped.extend(refused)
    # No dataset.json: tell the kinds apart by the first sample's members.
    kind = "curated"
    for shard in shards[:8]:
        entries = scan_shard(shard).entries
        if entries:
            kind = "latent" if LATENT_MEMBER in entries[0].members else "curated"
            break
    return kind, shards


# ----------------------------------------------------------------------------------- latent headers


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _safetensors_header(f, entry: SampleEntry) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The shapes and dtypes of the latent tensors, from the safetensors header alone, checked against
    each other and against the member's size."""
    m = entry.members[LATENT_MEMBER]
    f.seek(m.offset)
    head = f.read(8)
    if len(head) < 8:
        raise ShardError("latents.safetensors is truncated")
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > min(m.size - 8, MAX_SAFETENSORS_HEADER_BYTES):
        raise ShardError(f"latents.safetensors has a bad header length ({n} bytes in a {m.size}-byte member)")
    raw = f.read(n)
    if len(raw) < n:
        raise ShardError("latents.safetensors is truncated")
    try:
        header = loads_strict(raw)
    except (ValueError, RecursionError):
        raise ShardError("latents.safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ShardError("latents.safetensors header is not an object")
    data_size = m.size - 8 - n
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    for name in LATENT_TENSORS:
        t = header.get(name)
        if t is None:
            continue
        if not isinstance(t, dict):
            raise ShardError(f"latents.safetensors: tensor {name} has a bad header entry")
        dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if dtype not in _ST_ITEMSIZE:
            raise ShardError(f"latents.safetensors: tensor {name} has an unknown dtype {str(dtype)[:20]!r}")
        if dtype not in (_MASK_DTYPES if name == "text_mask" else _FLOAT_DTYPES):
            raise ShardError(f"latents.safetensors: tensor {name} has dtype {dtype}, which is not allowed here")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 1 for s in shape):
            raise ShardError(f"latents.safetensors: tensor {name} has a bad shape {str(shape)[:60]}")
        if len(shape) != _LATENT_NDIM[name]:
            raise ShardError(f"latents.safetensors: tensor {name} has {len(shape)} dimensions, not "
                             f"{_LATENT_NDIM[name]}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_size):
            raise ShardError(f"latents.safetensors: tensor {name} has bad data offsets {str(offs)[:60]}")
        if offs[1] - offs[0] != math.prod(shape) * _ST_ITEMSIZE[dtype]:
            raise ShardError(f"latents.safetensors: tensor {name}'s data size does not match its shape")
        shapes[name], dtypes[name] = list(shape), dtype
    missing = [t for t in LATENT_TENSORS if t not in shapes]
    if missing:
        raise ShardError(f"latents.safetensors misses tensor(s) {', '.join(missing)}")
    if shapes["text_mask"][0] != shapes["text"][0]:
        raise ShardError(f"latents.safetensors: text_mask length {shapes['text_mask'][0]} does not match text "
                         f"length {shapes['text'][0]}")
    return shapes, dtypes


# ----------------------------------------------------------------------------------- indexing


def _index_one(shard: str, kind: str, caps: dict[str, int], max_frame_pixels: int | None,
               ) -> tuple[list[SampleInfo], list[tuple[str, str]]]:
    try:
        f = _open_binary(shard)
    except OSError as e:
        return [], [(shard, f"shard refused: {describe_os_error(e)}")]
    out: list[SampleInfo] = []
    with f:
        scan = scan_shard(f, shard=shard, **caps)
        skipped = list(scan.skipped)
        for e in scan.entries:
            name = f"{shard}:{e.key}"
            try:
                out.append(_sample_info(f, e, kind, name, max_frame_pixels))
            except ShardError as ex:
                skipped.append((name, str(ex)))
            except OSError as ex:
                skipped.append((name, f"cannot read: {describe_os_error(ex)}"))
    if scan.error is not None:
        skipped.append((shard, f"rest of shard skipped after {len(scan.entries)} sample(s): {scan.error}"))
    return out, skipped


def _sample_info(f, e: SampleEntry, kind: str, name: str, max_frame_pixels: int | None) -> SampleInfo:
    need = CLIP_REQUIRED_MEMBERS if kind == "curated" else (LATENT_MEMBER, "json")
    missing = [m for m in need if m not in e.members]
    if missing:
        raise ShardError(f"misses member(s) {', '.join(missing)}")
    meta = parse_json_member(read_members(f, e, ("json",))["json"])
    if kind == "curated":
        # only the facts the plan needs are kept: the full JSON (embeddings, caption windows) is read again
        # with the sample, so the index stays small for millions of clips
        facts = check_clip_facts(meta)
        if max_frame_pixels is not None and facts["width"] * facts["height"] > max_frame_pixels:
            raise ShardError(f"clip is {facts['width']}x{facts['height']}, over max_frame_pixels "
                             f"{max_frame_pixels}")
        return SampleInfo(e.key, e, facts)
    info = SampleInfo(e.key, e, {})
    info.shapes, info.dtypes = _safetensors_header(f, e)
    return info


def index_source(path: str, *, threads: int = 8, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                 max_small_member_bytes: int = DEFAULT_MAX_SMALL_MEMBER_BYTES,
                 max_frame_pixels: int | None = None) -> SourceIndex:
    refused: list[tuple[str, str]] = []
    kind, shards = resolve_source(path, refused)
    caps = {"max_member_bytes": max_member_bytes, "max_small_member_bytes": max_small_member_bytes}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards)))) as pool:
        results = list(pool.map(lambda s: _index_one(s, kind, caps, max_frame_pixels), shards))
    index = SourceIndex(os.fspath(path), kind, shards, [r[0] for r in results], refused)
    for _, sk in results:
        index.skipped.extend(sk)
    return index
