"""Test data for the loader tests: tiny real H.264 clips in curated shard folders (and their checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataload.shards import ShardWriter, read_shard, validate_clip_sample
from dataload.synthetic import Shot, make_video

# (name, width, height, frames, fps, vfr)
CLIP_KINDS = [
    ("land", 64, 48, 20, 10.0, False),
    ("port", 48, 64, 20, 10.0, False),
    ("square", 48, 48, 24, 12.0, True),
    ("short", 64, 48, 5, 10.0, False),  # too short for 8 frames at 8 fps
]


def make_clips(folder: Path) -> dict[str, tuple[bytes, dict]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, w, h, n, fps, vfr) in enumerate(CLIP_KINDS):
        p = folder / f"{name}.mp4"
        truth = make_video(p, [Shot("pan", num_frames=n, seed=i)], width=w, height=h, fps=fps, vfr=vfr, seed=i)
        meta = {"width": w, "height": h, "num_frames": n, "fps": truth.fps,
                "start_s": 0.0, "end_s": truth.frame_times[-1] + 1 / fps, "start_frame": 0, "end_frame": n}
        out[name] = (p.read_bytes(), meta)
    return out


def write_curated(out: Path, clips: dict[str, tuple[bytes, dict]], n: int, per_shard: int,
                  kinds: tuple[str, ...] = ("land", "port", "square"), tag: str = "c") -> list[str]:
    """A curated OUT with n samples cycling through `kinds`; returns the keys in write order."""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    keys = []
    with ShardWriter(out / "shards", max_samples_per_shard=per_shard) as w:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            data, meta = clips[kind]
            key = f"{tag}{i:04d}"
            meta = dict(meta, clip_id=key, source=f"{kind}.mp4", caption=f"a {kind} clip number {i}")
            w.write(key, {"mp4": data, "json": json.dumps(meta).encode(), "txt": meta["caption"].encode()})
            keys.append(key)
    return keys


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("clips"))


def test_written_shards_are_valid(clips, tmp_path):
    keys = write_curated(tmp_path / "out", clips, 7, 3)
    got = []
    for shard in sorted((tmp_path / "out" / "shards").glob("*.tar")):
        for s in read_shard(shard):
            meta = validate_clip_sample(s)
            assert meta["clip_id"] == s["__key__"]
            got.append(s["__key__"])
    assert got == keys
