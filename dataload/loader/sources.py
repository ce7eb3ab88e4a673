"""Finding a dataset's shards and indexing their samples.

A source is a curated OUT, its `shards/` folder, or a latent folder (told apart by `dataset.json`), local
or an fsspec URL. Indexing reads only tar headers and the small members (the clip JSON, the header of a
safetensors file), never the video bytes, with a thread pool over shards so many shards do not serialise
on I/O. A sample whose JSON or schema is bad, and the rest of a truncated shard, are left out of the index
and reported as skipped with the shard and reason.
"""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dataload.errors import ShardError
from dataload.shards import (
    CLIP_REQUIRED_KEYS,
    SampleEntry,
    _open_binary,
    index_shard,
    list_shards,
    parse_json_member,
    read_members,
)

LATENT_MEMBER = "latents.safetensors"
LATENT_TENSORS = ("latents", "text", "text_mask")


# The only JSON facts the plan needs. The full JSON (which may hold embeddings and caption windows) and
# the caption are read again with the sample, so the index stays small for millions of clips.
PLAN_KEYS = ("width", "height", "num_frames", "fps")


@dataclass
class SampleInfo:
    key: str
    entry: SampleEntry
    facts: dict[str, Any]
    shapes: dict[str, list[int]] = field(default_factory=dict)  # latent tensors' shapes


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


def _exists(path: str) -> bool:
    if "://" in path:
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return fs.exists(p)
    return os.path.exists(path)


def _read_text(path: str) -> str:
    with _open_binary(path) as f:
        return f.read().decode("utf-8")


def resolve_source(path: str) -> tuple[str, list[str]]:
    """(kind, shard paths) of a dataset folder; FileNotFoundError / ValueError with one clear line."""
    path = os.fspath(path)
    if not _exists(path):
        raise FileNotFoundError(f"dataset not found: {path}")
    candidates = [(path, _join(path, "shards")), (path, path)]
    parent = os.path.dirname(path.rstrip("/"))
    if parent:
        candidates.append((parent, path))  # a curated OUT's shards/ folder
    for meta_dir, shard_dir in candidates:
        ds = _join(meta_dir, "dataset.json")
        if _exists(ds) and _exists(shard_dir):
            try:
                info = json.loads(_read_text(ds))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{ds} is not valid JSON: {e}") from None
            kind = info.get("kind") if isinstance(info, dict) else None
            if kind not in ("curated", "latent"):
                raise ValueError(f"{ds}: kind must be 'curated' or 'latent', got {kind!r}")
            shards = list_shards(shard_dir)
            if shards:
                return kind, shards
    shards = list_shards(path)
    if not shards and _exists(_join(path, "shards")):
        shards = list_shards(_join(path, "shards"))
    if not shards:
        raise ValueError(f"no shards (*.tar) found in {path}")
    # No dataset.json: tell the kinds apart by the first sample's members.
    entries, _ = index_shard(shards[0])
    kind = "latent" if entries and LATENT_MEMBER in entries[0].members else "curated"
    return kind, shards


def _safetensors_shapes(f, entry: SampleEntry) -> dict[str, list[int]]:
    m = entry.members[LATENT_MEMBER]
    f.seek(m.offset)
    head = f.read(8)
    if len(head) < 8:
        raise ShardError("latents.safetensors is truncated")
    (n,) = struct.unpack("<Q", head)
    if n > min(m.size - 8, 100_000_000):
        raise ShardError("latents.safetensors has a bad header length")
    try:
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ShardError("latents.safetensors header is not valid JSON") from None
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def _index_one(shard: str, kind: str) -> tuple[list[SampleInfo], list[tuple[str, str]]]:
    entries, err = index_shard(shard)
    skipped: list[tuple[str, str]] = []
    out: list[SampleInfo] = []
    if entries:
        try:
            f = _open_binary(shard)
        except OSError as e:
            return [], [(shard, f"cannot open: {e}")]
        with f:
            for e in entries:
                name = f"{shard}:{e.key}"
                try:
                    out.append(_sample_info(f, e, kind, name))
                except ShardError as ex:
                    skipped.append((name, str(ex)))
    if err is not None:
        skipped.append((shard, f"rest of shard skipped after {len(entries)} sample(s): {err}"))
    return out, skipped


def _sample_info(f, e: SampleEntry, kind: str, name: str) -> SampleInfo:
    need = ("mp4", "json") if kind == "curated" else (LATENT_MEMBER, "json")
    missing = [m for m in need if m not in e.members]
    if missing:
        raise ShardError(f"misses member(s) {', '.join(missing)}")
    meta = parse_json_member(read_members(f, e, ("json",))["json"], name)
    info = SampleInfo(e.key, e, {k: meta[k] for k in PLAN_KEYS if k in meta})
    if kind == "curated":
        missing_keys = [k for k in CLIP_REQUIRED_KEYS if k not in meta]
        if missing_keys:
            raise ShardError(f"clip JSON misses key(s) {', '.join(missing_keys)}")
        for k in ("width", "height", "num_frames", "fps"):
            if not isinstance(meta[k], (int, float)) or meta[k] <= 0:
                raise ShardError(f"clip JSON has a bad {k}: {meta[k]!r}")
    else:
        info.shapes = _safetensors_shapes(f, e)
        missing_t = [t for t in LATENT_TENSORS if t not in info.shapes]
        if missing_t:
            raise ShardError(f"latents.safetensors misses tensor(s) {', '.join(missing_t)}")
    return info


def index_source(path: str, *, threads: int = 8) -> SourceIndex:
    kind, shards = resolve_source(path)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards)))) as pool:
        results = list(pool.map(lambda s: _index_one(s, kind), shards))
    index = SourceIndex(os.fspath(path), kind, shards, [r[0] for r in results])
    for _, sk in results:
        index.skipped.extend(sk)
    return index
