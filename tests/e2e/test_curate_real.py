"""Acceptance on the real videos: every video in sources.parquet (corrupted.mp4 failed with a reason or
done with its decode errors counted), every candidate clip in clips.parquet, shards whose JSON equals the
parquet rows, the report and its figures."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from curate.cli import main
from tests.curate.corpus import clip_rows, decode_all, read_shards

pytestmark = pytest.mark.real_videos


def test_curate_real_videos(real_videos_dir, ground_truth, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["run", str(real_videos_dir), "--out", str(out), "--workers", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    sources = {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(out / "sources.parquet").to_pylist()}
    assert set(sources) == {p.name for p in real_videos_dir.iterdir() if p.suffix in (".mp4", ".mkv", ".webm", ".avi")}
    failed = [r for r in sources.values() if r["status"] == "failed"]
    assert rc == (3 if failed else 0) and all(r["reason"] for r in failed)
    if failed:
        assert lines[-1].startswith(f"{len(failed)} of {len(sources)} sources failed")
    bad = sources["corrupted.mp4"]
    assert (bad["status"] == "failed" and bad["reason"]) or (bad["status"] == "done" and bad["decode_errors"] > 0)
    assert sources["bikes.mp4"]["num_frames"] == ground_truth["bikes.mp4"]["frames"]
    assert sources["nasa_13013.mp4"]["num_frames"] == ground_truth["nasa_13013.mp4"]["best_video_stream"]["frames"]

    rows = clip_rows(out)
    for name, src in sources.items():
        assert sum(r["source"] == src["source"] for r in rows.values()) == src["num_clips"], name
    samples = read_shards(out)
    kept = {k: r for k, r in rows.items() if r["status"] == "kept"}
    assert set(samples) == set(kept) and kept, "no clip kept from the real videos"
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        assert {k: meta[k] for k in kept[key]} == kept[key]
        assert meta["shard"] == sample["__shard__"]
    key = sorted(samples)[0]
    _, frames = decode_all(samples[key]["mp4"])
    assert len(frames) == kept[key]["num_frames"]
    for name in ["report.md", "scores.png", "funnel.png", "contact_sheet.png"]:
        assert (out / name).stat().st_size > 0
