"""`vfm-curate run` end to end on tiny synthetic videos: outputs exactly as DESIGN.md section 2, plain
webdataset reads the shards, exit codes 0/2/3, bad inputs, reports, resume with added inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curate.cli import main
from curate.ids import clip_id
from tests.curate.corpus import clip_rows, comparable, decode_all, mixed_video, read_shards, two_shot_video

SOURCE_COLUMNS = ["source", "status", "reason", "duration_s", "num_frames", "fps", "width", "height", "codec",
                  "decode_errors", "num_clips", "num_kept"]
CLIP_COLUMNS = ["clip_id", "source", "start_s", "end_s", "start_frame", "end_frame", "num_frames", "fps", "width",
                "height", "motion", "sharpness", "brightness", "aesthetic", "caption", "caption_model", "caption_original",
                "caption_enhance_model", "embedding",
                "status", "reject_reason", "shard"]


def curate(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["run", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    mixed_video(root / "mixed.mp4", seed=0)
    (root / "more").mkdir()
    two_shot_video(root / "more" / "two.mp4", seed=10)
    return root


@pytest.fixture(scope="session")
def curated(corpus, tmp_path_factory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("curated") / "out"
    rc = main(["run", str(corpus), "--out", str(out), "--workers", "0", "--set", "write.max_clips_per_shard=2"])
    return out, rc, str(corpus)


def test_run_writes_every_output(curated):
    out, rc, _ = curated
    assert rc == 0
    for name in ["config.yaml", "dataset.json", "sources.parquet", "clips.parquet", "report.md", "scores.png",
                 "funnel.png", "contact_sheet.png"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "dataset.json").read_text())["kind"] == "curated"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["write"]["max_clips_per_shard"] == 2 and "filters" in cfg and "split" in cfg


def test_parquet_rows(curated):
    out, _, root = curated
    sources = pq.read_table(out / "sources.parquet")
    assert sources.column_names == SOURCE_COLUMNS
    src = sources.to_pylist()
    assert [s["source"] for s in src] == [os.path.join(root, "mixed.mp4"), os.path.join(root, "more", "two.mp4")]
    assert all(s["status"] == "done" and s["reason"] is None for s in src)
    clips = pq.read_table(out / "clips.parquet")
    assert clips.column_names[:len(CLIP_COLUMNS)] != [] and set(CLIP_COLUMNS) <= set(clips.column_names)
    rows = clips.to_pylist()
    for s in src:
        mine = [r for r in rows if r["source"] == s["source"]]
        assert len(mine) == s["num_clips"] and sum(r["status"] == "kept" for r in mine) == s["num_kept"]
    for r in rows:
        assert r["clip_id"] == clip_id(r["source"], r["start_frame"], r["end_frame"])
        assert r["num_frames"] == r["end_frame"] - r["start_frame"] and r["end_s"] > r["start_s"]
        assert (r["status"] == "kept") == (r["reject_reason"] is None) == (r["shard"] is not None)
    mixed = [r for r in rows if r["source"].endswith("mixed.mp4")]
    # the four shots of mixed.mp4: pan kept, still shot static, blurred pan blurry, objects kept
    assert [r["reject_reason"] for r in mixed] == [None, "static", "blurry", None]
    assert mixed[0]["caption"] == "a pan over hills 0" and mixed[0]["caption_model"] == "timed_text"
    assert mixed[3]["caption"] == "balls bouncing"


def test_shards_read_by_plain_webdataset(curated):
    import webdataset as wds

    out, _, _ = curated
    rows = clip_rows(out)
    kept = {k: r for k, r in rows.items() if r["status"] == "kept"}
    urls = [str(p) for p in sorted((out / "shards").glob("shard-*.tar"))]
    assert len(urls) == -(-len(kept) // 2)  # at most 2 clips per shard
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        row = kept[sample["__key__"]]
        for col, value in row.items():
            assert meta[col] == value, (col, meta[col], value)
        assert isinstance(meta["caption_windows"], list)
        assert sample["__url__"].endswith(meta["shard"])
        if row["caption"]:
            assert sample["txt"].decode() == row["caption"]
        else:
            assert "txt" not in sample
        seen[sample["__key__"]] = sample["mp4"]
    assert set(seen) == set(kept)
    for key, mp4 in seen.items():
        codec, frames = decode_all(mp4)
        assert codec == "h264" and len(frames) == kept[key]["num_frames"]
        f = frames[0]
        assert (f.width, f.height) == (kept[key]["width"], kept[key]["height"])
        assert f.width % 2 == 0 and f.height % 2 == 0 and f.format.name == "yuv420p"


def test_report_command_rewrites_report(curated, capsys):
    out, _, _ = curated
    for name in ["report.md", "funnel.png"]:
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "static" in text and "blurry" in text and (out / "funnel.png").is_file()
    assert main(["report", str(out / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_rerun_is_a_no_op_and_other_config_is_refused(curated, capsys):
    out, _, root = curated
    before = comparable(read_shards(out))
    rc, stdout, _ = curate(capsys, root, "--out", out, "--workers", "0", "--set", "write.max_clips_per_shard=2")
    assert rc == 0 and "0 processed now, 2 resumed" in stdout
    assert comparable(read_shards(out)) == before
    rc, _, err = curate(capsys, root, "--out", out, "--workers", "0")
    assert rc == 2 and "different config" in err and err.count("\n") == 1


def test_could_not_run_exit_2(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = curate(capsys, corpus / "mixed.mp4", corpus / "missing.mp4", "--out", out)
    assert rc == 2 and "input not found" in err and "missing.mp4" in err and not out.exists()
    rc, _, err = curate(capsys, corpus, "--out", out, "--set", "filters.min_motoin=1")
    assert rc == 2 and "filters.min_motoin" in err and not out.exists()
    (tmp_path / "file").write_text("x")
    rc, _, err = curate(capsys, corpus, "--out", tmp_path / "file")
    assert rc == 2 and "not a folder" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("x")
    rc, _, err = curate(capsys, corpus, "--out", busy)
    assert rc == 2 and "not empty" in err


def test_bad_inputs_fail_and_the_run_goes_on(corpus, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(corpus / "more" / "two.mp4", bad / "good.mp4")
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n" * 50)
    data = (corpus / "mixed.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    os.symlink(bad / "gone.mp4", bad / "dangling.mp4")
    rc, stdout, _ = curate(capsys, bad, "--out", tmp_path / "out", "--workers", "0")
    assert rc == 3
    assert stdout.strip().splitlines()[-1].startswith("4 of 5 sources failed")
    src = {Path(r["source"]).name: r for r in pq.read_table(tmp_path / "out" / "sources.parquet").to_pylist()}
    assert src["good.mp4"]["status"] == "done" and src["good.mp4"]["num_kept"] >= 1
    for name in ["empty.mp4", "text.mp4", "truncated.mp4", "dangling.mp4"]:
        assert src[name]["status"] == "failed" and src[name]["reason"], name
    assert "0 bytes" in src["empty.mp4"]["reason"]
    # failed sources are retried by the next run (their cause may be gone); done ones are not redone
    shutil.copy(corpus / "more" / "two.mp4", bad / "empty.mp4")
    rc, stdout, _ = curate(capsys, bad, "--out", tmp_path / "out", "--workers", "0")
    assert rc == 3 and "4 processed now, 1 resumed" in stdout
    assert stdout.strip().splitlines()[-1].startswith("3 of 5 sources failed")
    src = {Path(r["source"]).name: r for r in pq.read_table(tmp_path / "out" / "sources.parquet").to_pylist()}
    assert src["empty.mp4"]["status"] == "done" and src["empty.mp4"]["reason"] is None


def test_resume_with_added_inputs(corpus, curated, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--out", out, "--workers", "0", "--set", "write.max_clips_per_shard=2"]
    rc, _, _ = curate(capsys, corpus / "mixed.mp4", *args)
    assert rc == 0
    first = comparable(read_shards(out))
    rc, stdout, _ = curate(capsys, corpus / "mixed.mp4", corpus / "more", *args)
    assert rc == 0 and "1 processed now, 1 resumed" in stdout
    both = comparable(read_shards(out))
    assert set(first) < set(both) and all(both[k] == v for k, v in first.items())
    # equals the run that had both inputs from the start
    assert both == comparable(read_shards(curated[0]))


def test_fsspec_url_inputs(corpus, tmp_path, capsys):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/b2run/clip.mp4", (corpus / "mixed.mp4").read_bytes())
    fs.pipe("/b2run/clip.srt", (corpus / "mixed.srt").read_bytes())
    # the in-memory filesystem lives in this process, hence the inline executor
    rc, _, _ = curate(capsys, "memory:///b2run", "--out", tmp_path / "out", "--workers", "0")
    assert rc == 0
    rows = list(clip_rows(tmp_path / "out").values())
    assert {r["source"] for r in rows} == {"memory:///b2run/clip.mp4"}
    assert [r["reject_reason"] for r in rows] == [None, "static", "blurry", None]
    assert rows[0]["caption"] == "a pan over hills 0"


def test_whole_video_rules_skip(tmp_path, capsys):
    from dataload.synthetic import Shot, make_video

    make_video(tmp_path / "tiny.mp4", [Shot("pan", 30, seed=1)], [], width=48, height=32)
    make_video(tmp_path / "short.mp4", [Shot("pan", 8, seed=2)], [], width=128, height=72)
    rc, stdout, _ = curate(capsys, tmp_path / "tiny.mp4", tmp_path / "short.mp4", "--out", tmp_path / "out",
                           "--workers", "0")
    assert rc == 0 and "0 done, 0 failed, 2 skipped" in stdout
    src = {Path(r["source"]).name: r for r in pq.read_table(tmp_path / "out" / "sources.parquet").to_pylist()}
    assert src["tiny.mp4"]["status"] == "skipped" and src["tiny.mp4"]["reason"].startswith("video_too_small")
    assert src["short.mp4"]["status"] == "skipped" and src["short.mp4"]["reason"].startswith("video_too_short")
    assert src["tiny.mp4"]["width"] == 48 and src["short.mp4"]["num_frames"] == 8
    assert not list((tmp_path / "out" / "shards").iterdir())


def test_nvenc_only_when_present(corpus, tmp_path, capsys):
    from curate.stages.transcode.encode import nvenc_available

    if nvenc_available():
        pytest.skip("this machine has NVENC; the refusal path cannot be shown")
    rc, _, err = curate(capsys, corpus / "mixed.mp4", "--out", tmp_path / "out", "--set", "transcode.encoder=nvenc")
    assert rc == 2 and "h264_nvenc" in err and not (tmp_path / "out").exists()


def test_rerun_after_a_kill_during_the_final_write(curated, tmp_path, capsys):
    """What a kill between the final write's steps can leave: a half-built shards folder, the old one
    moved aside or gone, work dirs of sources in flight. The rerun ends with the same shards."""
    out, _, root = curated
    expected = comparable(read_shards(out))
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "shards")
    (copy / "shards.building").mkdir()
    (copy / "shards.building" / ".shard-000000.tar.tmp-1").write_bytes(b"\0" * 700)
    (copy / "shards.building" / "shard-000000.tar").write_bytes(b"partial")
    (copy / "_state" / "tmp" / "x-1-deadbeef").mkdir(parents=True)
    (copy / "_state" / "tmp" / "x-1-deadbeef" / "clip.mp4.part.mp4").write_bytes(b"half")
    (copy / "clips.parquet").unlink()
    rc, stdout, _ = curate(capsys, root, "--out", copy, "--workers", "0", "--set", "write.max_clips_per_shard=2")
    assert rc == 0 and "0 processed now, 2 resumed" in stdout
    assert comparable(read_shards(copy)) == expected
    assert not (copy / "shards.building").exists()
    assert not (copy / "_state" / "tmp").exists() or not list((copy / "_state" / "tmp").iterdir())
    assert clip_rows(copy) == clip_rows(out)


def test_short_scene_pieces_are_rejected_not_dropped(tmp_path, capsys):
    """A shot shorter than split.min_clip_s is a candidate clip rejected as too_short, never silently lost."""
    from dataload.synthetic import Shot, Transition, make_video

    truth = make_video(tmp_path / "v.mp4", [Shot("pan", 75, seed=1), Shot("objects", 20, seed=2),
                                            Shot("pan", 75, seed=3, direction=90.0)],
                       [Transition("cut"), Transition("cut")], width=128, height=72)
    rc, _, _ = curate(capsys, tmp_path / "v.mp4", "--out", tmp_path / "out", "--workers", "0")
    assert rc == 0
    rows = sorted(pq.read_table(tmp_path / "out" / "clips.parquet").to_pylist(), key=lambda r: r["start_frame"])
    short = [r for r in rows if truth.cuts[0] <= r["start_frame"] < truth.cuts[1]]
    assert len(short) == 1, rows
    assert short[0]["status"] == "rejected" and short[0]["reject_reason"] == "too_short"
    assert short[0]["end_s"] - short[0]["start_s"] < 2.0 and short[0]["shard"] is None


def test_contact_sheet_from_saved_thumbnails_or_decoded_frames(curated, tmp_path):
    """Every kept clip's middle frame is saved beside its mp4 while it is encoded; the report's contact
    sheet uses those, and decodes the shards for a run that has none (an older run): the same grid."""
    import numpy as np
    from PIL import Image

    from curate.stages.write.report import write_report
    from curate.state import THUMB_HEIGHT, sources_dir, thumbnail_name

    out, _, _ = curated
    kept = [r for r in pq.read_table(out / "clips.parquet").to_pylist() if r["status"] == "kept"]
    thumbs = {p.name: p for p in sources_dir(out).glob("*/*.thumb.png")}
    assert kept and set(thumbs) == {thumbnail_name(r["clip_id"]) for r in kept}
    for r in kept:
        img = Image.open(thumbs[thumbnail_name(r["clip_id"])])
        assert img.height == THUMB_HEIGHT and img.width == round(r["width"] * THUMB_HEIGHT / r["height"])
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for p in sources_dir(copy).glob("*/*.thumb.png"):
        p.unlink()
    write_report(copy)
    saved = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"), dtype=np.int16)
    decoded = np.asarray(Image.open(copy / "contact_sheet.png").convert("RGB"), dtype=np.int16)
    assert saved.shape == decoded.shape
    diff = np.abs(saved - decoded).mean()
    assert diff < 6  # the source frame against its H.264 decode, resized two ways (2.2 measured)
