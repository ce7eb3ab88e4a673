"""Acceptance on the real videos, from one `vfm-curate run` shared by the tests of this module:

- every video in sources.parquet (corrupted.mp4 failed with a reason or done with its decode errors
  counted), every candidate clip in clips.parquet, shards whose JSON equals the parquet rows, the report
  and its figures;
- the run equals the stored listing `curate_real_listing.json` (made by this code before the curation
  redesign): the same sources with the same statuses, the same clip ids with the same statuses and
  reject reasons, and the same bytes for every clip's mp4 (sha256). A change of any of them must be a
  decision, taken by regenerating the listing (VFM_WRITE_LISTING=1) with the reason in the commit.

The run reads the videos through a link named `videos` from its own working folder, so the clip ids
(UUID5 of the path as given) do not depend on where the checkout lies.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.cli import main
from tests.curate.corpus import clip_rows, decode_all, read_shards

pytestmark = pytest.mark.real_videos
LISTING = Path(__file__).with_name("curate_real_listing.json")


@pytest.fixture(scope="module")
def real_run(real_videos_dir, tmp_path_factory):
    """(exit status, stdout lines, OUT) of one run over the real videos, inputs given as `videos`."""
    work = tmp_path_factory.mktemp("real")
    (work / "videos").symlink_to(real_videos_dir, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["run", "videos", "--out", "out", "--workers", "0"])
    return rc, buf.getvalue().strip().splitlines(), work / "out"


def listing(out: Path) -> dict:
    """What must stay equal: per source its status and reason, per clip its status, reject reason and
    the sha256 of its mp4 (None when rejected)."""
    sources = sorted(pq.read_table(out / "sources.parquet").to_pylist(), key=lambda r: r["source"])
    samples = read_shards(out)
    clips = sorted(clip_rows(out).values(), key=lambda r: (r["source"], r["start_frame"]))
    return {
        "sources": [{"source": r["source"], "status": r["status"], "reason": r["reason"],
                     "num_clips": r["num_clips"]} for r in sources],
        "clips": [{"source": r["source"], "clip_id": r["clip_id"], "start_frame": r["start_frame"],
                   "end_frame": r["end_frame"], "status": r["status"], "reject_reason": r["reject_reason"],
                   "mp4_sha256": (hashlib.sha256(samples[r["clip_id"]]["mp4"]).hexdigest()
                                  if r["clip_id"] in samples else None)} for r in clips],
    }


def test_curate_real_videos(real_run, real_videos_dir, ground_truth):
    rc, lines, out = real_run
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


def test_curate_real_videos_match_the_stored_listing(real_run):
    _, _, out = real_run
    got = listing(out)
    if os.environ.get("VFM_WRITE_LISTING"):
        LISTING.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(LISTING.read_text())
    assert got["sources"] == want["sources"]
    # clip by clip, so a failure names the clip that changed
    assert [c["clip_id"] for c in got["clips"]] == [c["clip_id"] for c in want["clips"]]
    for g, w in zip(got["clips"], want["clips"]):
        assert g == w, g["clip_id"]
