"""The clip record, defined once: the parquet schema the writer uses, the JSON member (no NaN ever), and the
checks the loaders apply, all from the same fields."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from dataload.clip_record import (
    CLIP_COLUMNS,
    CLIP_REQUIRED_KEYS,
    ClipRecord,
    arrow_schema,
    check_clip_facts,
    clip_json,
    validate_clip_sample,
)
from dataload.errors import ShardError
from dataload.strict_json import loads_strict


def _record(**kw) -> ClipRecord:
    base = dict(clip_id="c1", source="v.mp4", start_s=0.0, end_s=2.0, start_frame=0, end_frame=50, num_frames=50,
                fps=25.0, width=64, height=48)
    return ClipRecord(**{**base, **kw})


def test_parquet_schema_comes_from_the_fields():
    schema = arrow_schema()
    assert tuple(schema.names) == CLIP_COLUMNS and "caption_windows" not in CLIP_COLUMNS  # JSON only
    assert schema.field("clip_id").type == pa.string() and schema.field("start_frame").type == pa.int64()
    assert schema.field("motion").type == pa.float64() and schema.field("embedding").type == pa.list_(pa.float64())
    assert CLIP_REQUIRED_KEYS == ("clip_id", "source", "start_s", "end_s", "start_frame", "end_frame",
                                  "num_frames", "fps", "width", "height")
    pa.Table.from_pylist([_record().row()], schema=schema)  # a row fits its schema


def test_a_non_finite_score_is_written_as_null_and_the_json_stays_loadable():
    rec = _record(motion=math.nan, sharpness=math.inf, brightness=0.5, embedding=[0.1, math.nan])
    row = rec.row()
    assert row["motion"] is None and row["sharpness"] is None and row["brightness"] == 0.5
    assert row["embedding"] is None
    meta = loads_strict(clip_json(row, [{"start_s": 0.0, "end_s": 1.0, "text": "x"}]))  # strict reader: no NaN
    assert meta["caption_windows"][0]["text"] == "x"
    assert validate_clip_sample({"__key__": "c1", "mp4": b"", "json": clip_json(row, [])})["clip_id"] == "c1"
    with pytest.raises(ValueError):  # a required field is never silently nulled: refused
        clip_json(_record(start_s=math.nan).row(), [])


def test_loader_checks_follow_the_declared_types_and_ranges():
    good = json.loads(clip_json(_record().row(), []))
    assert check_clip_facts(good) == {"width": 64, "height": 48, "num_frames": 50, "fps": 25.0}
    assert check_clip_facts({**good, "width": 64.0})["width"] == 64  # an integral float is an integer
    for key, value, words in [("width", 0, "want an integer in [1, 65536]"), ("start_frame", -1, "want an integer >= 0"),
                              ("fps", 1e5, "want a number in [0.001, 10000]"), ("end_s", "2", "want a finite number"),
                              ("source", "", "want a non-empty string"), ("num_frames", True, "want an integer")]:
        with pytest.raises(ShardError, match=words.replace("[", r"\[").replace("]", r"\]")):
            check_clip_facts({**good, key: value})
    with pytest.raises(ShardError, match="misses key"):
        check_clip_facts({k: v for k, v in good.items() if k != "fps"})
    with pytest.raises(ShardError, match="misses member"):
        validate_clip_sample({"__key__": "k", "json": b"{}"})
