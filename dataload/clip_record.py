"""The clip record: what one curated clip is, defined once (DESIGN.md section 2).

A record is a row of OUT/clips.parquet and, for a kept clip, the `<clip_id>.json` member of its shard
sample (that row plus `caption_windows`). Everything about it lives here, and nowhere else:
- its fields, their types and order (`ClipRecord`): the curation writer builds clips.parquet's schema from
  them (`arrow_schema`) and writes rows and JSON through `ClipRecord.row` and `clip_json`;
- what a loader requires of a sample: the fields marked required, with their ranges (`check_clip_facts`),
  and the members a sample must hold (`CLIP_REQUIRED_MEMBERS`; `validate_clip_sample` checks both);
- the statuses and the fixed set of reject reasons.
Readers accept extra members and keys, so later stages can add fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dataload.errors import ShardError
from dataload.strict_json import parse_json_member, show

CLIP_REQUIRED_MEMBERS = ("mp4", "json")  # the clip (H.264 yuv420p, even dimensions) and its record
CLIP_OPTIONAL_MEMBERS = ("txt",)  # the caption, when there is one
KEPT, REJECTED = "kept", "rejected"
CLIP_STATUSES = (KEPT, REJECTED)
DUPLICATE_PREFIX = "duplicate_of:"
# Why a clip was rejected (clips.parquet `reject_reason`); the first rule a clip breaks names it.
REJECT_REASONS = ("too_short", "too_long", "too_small", "dark", "bright", "static", "jittery", "blurry",
                  "low_aesthetic", DUPLICATE_PREFIX + "<clip_id>")

# Bounds of a sane record; a loader refuses anything outside them, so its planner and decoder only ever
# see finite, sane numbers.
MAX_SIDE = 1 << 16  # pixels per side
MAX_CLIP_FRAMES = 10_000_000
MIN_FPS, MAX_FPS = 1e-3, 1e4


def _meta(required: bool = False, lo: float | None = None, hi: float | None = None,
          parquet: bool = True) -> dict[str, Any]:
    return {"required": required, "lo": lo, "hi": hi, "parquet": parquet}


def _req(lo: float | None = None, hi: float | None = None) -> Any:
    return field(metadata=_meta(True, lo, hi))


def _opt() -> Any:
    return field(default=None, metadata=_meta())


@dataclass
class ClipRecord:
    """One candidate clip of a source. Required fields (a loader checks them) come first, in order."""

    clip_id: str = _req()
    source: str = _req()  # the path or URL as given to `vfm-curate run`
    start_s: float = _req()  # seconds from the source's first frame (stream timestamps)
    end_s: float = _req()
    start_frame: int = _req(0)  # half-open [start_frame, end_frame), frames numbered as decoded
    end_frame: int = _req(0)
    num_frames: int = _req(1, MAX_CLIP_FRAMES)
    fps: float = _req(MIN_FPS, MAX_FPS)  # average rate over the clip
    width: int = _req(1, MAX_SIDE)  # of the encoded clip (display orientation, even)
    height: int = _req(1, MAX_SIDE)
    motion: float | None = _opt()  # scores: None when not measured
    jitter: float | None = _opt()
    sharpness: float | None = _opt()
    brightness: float | None = _opt()
    aesthetic: float | None = _opt()
    caption: str | None = _opt()
    caption_model: str | None = _opt()
    caption_original: str | None = _opt()  # the caption before enhancement; None when not enhanced
    caption_enhance_model: str | None = _opt()  # the language model that rewrote `caption`
    embedding: list[float] | None = _opt()  # L2-normalised, when computed
    status: str = field(default=KEPT, metadata=_meta())  # one of CLIP_STATUSES
    reject_reason: str | None = _opt()  # one of REJECT_REASONS; None when kept
    shard: str | None = _opt()  # the shard holding the clip; None when rejected
    # JSON only: [{start_s, end_s, text}] relative to the clip (timed text or one caption per VLM window)
    caption_windows: list[dict[str, Any]] = field(default_factory=list, metadata=_meta(parquet=False))

    def row(self) -> dict[str, Any]:
        """The clips.parquet row. A score that is not a finite number (NaN from a degenerate measurement)
        is written as null, so the clip's JSON stays loadable."""
        out = {}
        for f in PARQUET_FIELDS:
            v = getattr(self, f.name)
            if f.name == "embedding" and v is not None:
                v = [float(x) for x in v]
                v = v if all(map(math.isfinite, v)) else None
            elif isinstance(v, float) and not f.metadata["required"] and not math.isfinite(v):
                v = None
            out[f.name] = v
        return out


FIELDS = tuple(dataclasses.fields(ClipRecord))
PARQUET_FIELDS = tuple(f for f in FIELDS if f.metadata["parquet"])
CLIP_COLUMNS = tuple(f.name for f in PARQUET_FIELDS)
CLIP_REQUIRED_KEYS = tuple(f.name for f in FIELDS if f.metadata["required"])
LOADER_FACTS = ("width", "height", "num_frames", "fps")  # what a loader plans batches from


def clip_json(row: Mapping[str, Any], caption_windows: list[dict[str, Any]]) -> bytes:
    """The shard's JSON member: the parquet row with equal values, plus caption_windows. Refuses (ValueError)
    a non-finite number rather than writing JSON that no strict reader accepts."""
    return json.dumps({**row, "caption_windows": caption_windows}, sort_keys=True, allow_nan=False).encode()


@lru_cache(maxsize=1)
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(ClipRecord)


def _base_type(hint: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def arrow_schema():
    """clips.parquet's schema, from the record's fields (pyarrow is imported only here)."""
    import pyarrow as pa

    simple = {str: pa.string(), int: pa.int64(), float: pa.float64()}
    cols = []
    for f in PARQUET_FIELDS:
        t = _base_type(_hints()[f.name])
        cols.append((f.name, pa.list_(simple[typing.get_args(t)[0]]) if typing.get_origin(t) is list else simple[t]))
    return pa.schema(cols)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(name: str, v: Any, kind: type, lo: float | None, hi: float | None) -> Any:
    """One required value, checked against its declared type and range; returns it (ints as int)."""
    if kind is str:
        if not isinstance(v, str) or not v:
            raise ShardError(f"clip JSON has a bad {name}: {show(v, 60)} (want a non-empty string)")
        return v
    if kind is int:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
            raise ShardError(f"clip JSON has a bad {name}: {show(v, 60)} (want {rng})")
        return v
    if not _is_number(v) or not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        want = f"a number in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else "a finite number"
        raise ShardError(f"clip JSON has a bad {name}: {show(v, 60)} (want {want})")
    return float(v)


def check_clip_facts(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The clip JSON's required keys, checked: present, of their types (no bools for numbers), finite and
    in range. Returns the facts a loader plans from (LOADER_FACTS: width, height, num_frames as ints, fps)."""
    missing = [k for k in CLIP_REQUIRED_KEYS if k not in meta]
    if missing:
        raise ShardError(f"clip JSON misses key(s) {', '.join(missing)}")
    out = {f.name: _check(f.name, meta[f.name], _base_type(_hints()[f.name]), f.metadata["lo"], f.metadata["hi"])
           for f in FIELDS if f.metadata["required"]}
    return {k: out[k] for k in LOADER_FACTS}


def validate_clip_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Check a curated clip sample's members and JSON keys (present, of their types, in range); return
    the parsed JSON. Extra members and keys are fine."""
    where = f"sample {sample.get('__key__', '?')!r} of {sample.get('__shard__', '?')}"
    missing = [m for m in CLIP_REQUIRED_MEMBERS if m not in sample]
    if missing:
        raise ShardError(f"{where} misses member(s) {', '.join(missing)}")
    meta = parse_json_member(sample["json"], where)
    try:
        check_clip_facts(meta)
    except ShardError as e:
        raise ShardError(f"{where}: {e}") from None
    return meta
