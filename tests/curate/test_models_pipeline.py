"""`vfm-curate run` with every model stage on: a tiny random Qwen2-VL (captions), a tiny random CLIP plus an
MLP head (aesthetic + embedding) and dedup, on the real videos; and the OpenAI-HTTP backend in a run."""

from __future__ import annotations

import json
import tarfile

import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.common.frames import clip_windows
from curate.stages.clip_scores.tiny import save_aesthetic_head, save_tiny_clip
from curate.stages.vlm_caption.tiny import save_tiny_qwen2vl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pipeline_models")
    return {"vlm": str(save_tiny_qwen2vl(root / "vlm")), "clip": str(save_tiny_clip(root / "clip")),
            "head": str(save_aesthetic_head(root / "head.safetensors", 16, hidden=(8,), seed=3))}


def _shard_samples(out) -> dict[str, dict]:
    samples: dict[str, dict] = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = t.extractfile(m).read()
    return samples


@pytest.mark.real_videos
@pytest.mark.slow
def test_run_with_all_model_stages_on_real_videos(real_videos_dir, tiny, tmp_path):
    out = tmp_path / "out"
    threshold = -0.05
    sets = ["models.vlm.enabled=true", f"models.vlm.model={tiny['vlm']}", "models.vlm.max_new_tokens=4",
            "models.vlm.max_frames=2", "models.vlm.window_s=3", f"models.clip.model={tiny['clip']}",
            "models.clip.frames=3", "models.aesthetic.enabled=true", f"models.aesthetic.head={tiny['head']}",
            f"models.aesthetic.threshold={threshold}", "models.embedding.enabled=true",
            "models.dedup.enabled=true", "models.dedup.cosine_threshold=0.9999"]
    argv = ["run", str(real_videos_dir), "--out", str(out), "--workers", "2"]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    assert code in (0, 3)
    sources = pq.read_table(out / "sources.parquet").to_pylist()
    assert sum(r["status"] == "done" for r in sources) >= 7, sources
    clips = pq.read_table(out / "clips.parquet").to_pylist()
    scored = [c for c in clips if c["aesthetic"] is not None]
    assert scored, "no clip reached the model stages"
    for c in scored:
        # every clip that reached the CLIP stage has a 16-d unit embedding and its verdict matches the score
        assert len(c["embedding"]) == 16
        assert sum(v * v for v in c["embedding"]) == pytest.approx(1.0, abs=1e-4)
        assert (c["reject_reason"] == "low_aesthetic") == (c["aesthetic"] < threshold)
    kept = [c for c in clips if c["status"] == "kept"]
    assert kept, "nothing kept: the test would not check captions in shards"
    samples = _shard_samples(out)
    for c in kept:
        assert c["caption_model"] == tiny["vlm"]
        meta = json.loads(samples[c["clip_id"]]["json"])
        windows = meta["caption_windows"]
        expected = clip_windows(c["start_s"], c["end_s"], 3.0)
        assert [x for w in windows for x in (w["start_s"], w["end_s"])] == pytest.approx(
            [x for pair in expected for x in pair])
        assert c["caption"] == (" ".join(w["text"] for w in windows if w["text"]) or None)
        assert meta["caption"] == c["caption"] and meta["embedding"] == c["embedding"]
        if c["caption"]:
            assert samples[c["clip_id"]]["txt"].decode() == c["caption"]
    assert any(c["caption"] for c in kept)
    assert any(len(json.loads(samples[c["clip_id"]]["json"])["caption_windows"]) > 1 for c in kept), \
        "no clip was long enough for several caption windows"
    # dedup names only clips that exist and were kept
    ids = {c["clip_id"]: c for c in clips}
    for c in clips:
        if (c["reject_reason"] or "").startswith("duplicate_of:"):
            assert ids[c["reject_reason"].split(":", 1)[1]]["status"] == "kept"


@pytest.mark.slow
def test_run_with_http_caption_backend(tmp_path):
    from dataload.synthetic import Shot, make_video
    from tests.curate.test_models import _ChatServer

    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "a.mp4", [Shot("pan", 70, seed=1)], width=128, height=72)
    make_video(videos / "b.mp4", [Shot("objects", 70, seed=2)], width=128, height=72)
    out = tmp_path / "out"
    with _ChatServer() as server:
        code = main(["run", str(videos), "--out", str(out), "--workers", "1",
                     "--set", "models.vlm.enabled=true", "--set", "models.vlm.backend=openai",
                     "--set", f"models.vlm.base_url={server.url}", "--set", "models.vlm.model=served",
                     "--set", "models.vlm.max_frames=2", "--set", "models.vlm.concurrency=2"])
    assert code == 0
    clips = [c for c in pq.read_table(out / "clips.parquet").to_pylist() if c["status"] == "kept"]
    assert len(clips) == 2
    for c in clips:
        assert c["caption_model"] == "served"
        assert c["caption"].startswith("served: 2 images, level ")


def test_bad_model_path_stops_the_run_with_one_line(tmp_path, capsys):
    from dataload.synthetic import Shot, make_video

    make_video(tmp_path / "a.mp4", [Shot("pan", 60, seed=1)], width=96, height=64)
    code = main(["run", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "out"), "--workers", "0",
                 "--set", "models.embedding.enabled=true", "--set", f"models.clip.model={tmp_path / 'missing'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and "cannot load CLIP model" in err[0], err
