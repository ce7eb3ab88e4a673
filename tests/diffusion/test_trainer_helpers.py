"""Training data for the trainer/CLI tests: a tiny curated folder of real H.264 clips with captions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataload.shards import ShardWriter, read_shard, validate_clip_sample
from dataload.synthetic import Shot, make_video

CAPTIONS = ["a red square drifting left", "soft blue texture panning", "a bright zoom into stripes",
            "shaky green pattern"]
KINDS = ["pan", "texture", "zoom", "shake"]


def write_curated(out: Path, num_clips: int = 4, frames: int = 12, size: int = 32, fps: float = 8.0) -> Path:
    """OUT/dataset.json + OUT/shards/*.tar with `num_clips` clips (one shot each) and captions."""
    tmp = out / "_videos"
    tmp.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    with ShardWriter(out / "shards", max_samples_per_shard=2) as w:
        for i in range(num_clips):
            path = tmp / f"clip{i}.mp4"
            kind = KINDS[i % len(KINDS)]
            truth = make_video(path, [Shot(kind if kind != "texture" else "texture", num_frames=frames, seed=i)],
                               width=size, height=size, fps=fps, seed=i)
            caption = CAPTIONS[i % len(CAPTIONS)]
            meta = {"clip_id": f"clip{i:03d}", "source": str(path), "start_s": 0.0,
                    "end_s": truth.frame_times[-1] + 1 / fps, "start_frame": 0, "end_frame": frames,
                    "num_frames": frames, "fps": fps, "width": size, "height": size, "caption": caption}
            w.write(meta["clip_id"], {"mp4": path.read_bytes(), "json": json.dumps(meta).encode(),
                                      "txt": caption.encode()})
    (out / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    return out


@pytest.fixture(scope="session")
def curated(tmp_path_factory) -> Path:
    return write_curated(tmp_path_factory.mktemp("curated"))


def test_curated_fixture_is_valid(curated):
    keys = []
    for shard in sorted((curated / "shards").glob("*.tar")):
        for sample in read_shard(shard):
            meta = validate_clip_sample(sample)
            assert meta["caption"] in CAPTIONS
            keys.append(meta["clip_id"])
    assert len(keys) == 4
