"""Images in `vfm-curate run`: still pictures (PNG, JPEG) in a folder with videos are curated as one-frame
clips, captioned by the `.txt` beside them; the loader blends the images with videos by weight and packs
one-frame clips beside video clips."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from tests.curate.corpus import read_shards, two_shot_video

# (name, height, width, caption or None): an odd-sized JPEG too (clips are encoded with even sides)
IMAGES = [("sky.png", 96, 128, "a  blue sky\nwith clouds"), ("cat.jpg", 128, 80, None), ("odd.jpg", 95, 127, "odd")]


def write_image(path: Path, h: int, w: int, seed: int) -> None:
    """A sharp, mid-bright picture: blocks of random colours (blur and darkness filters keep it)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(40, 220, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]).save(path, quality=95)


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, h, w, caption) in enumerate(IMAGES):
        write_image(folder / name, h, w, seed=i)
        if caption is not None:
            (folder / name).with_suffix(".txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = write_images(tmp_path_factory.mktemp("media") / "pictures")
    two_shot_video(root.parent / "video.mp4", seed=3)
    return root.parent


@pytest.fixture(scope="module")
def curated_media(media, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "out"
    assert main(["run", str(media), "--out", str(out), "--workers", "0"]) == 0
    return out


def test_images_become_captioned_one_frame_clips(curated_media, media):
    sources = {Path(r["source"]).name: r for r in pq.read_table(curated_media / "sources.parquet").to_pylist()}
    assert set(sources) == {"sky.png", "cat.jpg", "odd.jpg", "video.mp4"}
    assert all(r["status"] == "done" for r in sources.values()), sources
    clips = pq.read_table(curated_media / "clips.parquet").to_pylist()
    stills = {Path(c["source"]).name: c for c in clips if c["num_frames"] == 1}
    assert set(stills) == {"sky.png", "cat.jpg", "odd.jpg"}
    assert all(c["status"] == "kept" for c in stills.values()), stills
    assert stills["sky.png"]["caption"] == "a blue sky with clouds"
    assert stills["sky.png"]["caption_model"] == "text_file"
    assert stills["cat.jpg"]["caption"] is None
    assert (stills["sky.png"]["width"], stills["sky.png"]["height"]) == (128, 96)
    assert any(c["num_frames"] > 1 and c["status"] == "kept" for c in clips), "the video is curated beside them"

    samples = read_shards(curated_media)
    sky = samples[stills["sky.png"]["clip_id"]]
    assert sky["txt"].decode() == "a blue sky with clouds"
    with av.open(io.BytesIO(sky["mp4"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 1 and frames[0].shape == (96, 128, 3)
    odd = json.loads(samples[stills["odd.jpg"]["clip_id"]]["json"])
    assert odd["width"] % 2 == 0 and odd["height"] % 2 == 0


def test_a_glob_of_images_and_a_rerun_resume(media, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(media / "pictures" / "*.jpg"), "--out", str(out), "--workers", "0"]) == 0
    rows = pq.read_table(out / "sources.parquet").to_pylist()
    assert sorted(Path(r["source"]).name for r in rows) == ["cat.jpg", "odd.jpg"]
    capsys.readouterr()
    assert main(["run", str(media / "pictures" / "*.jpg"), "--out", str(out), "--workers", "0"]) == 0
    assert "2 resumed" in capsys.readouterr().out


def test_loader_blends_and_packs_images_with_videos(curated_media, tmp_path):
    from dataload.loader import LoaderConfig, build_loader
    from tests.e2e.test_train_packed import write_mixed

    videos = write_mixed(tmp_path / "videos")
    cfg = LoaderConfig(num_frames=1, fps=8.0, buckets=[(4, 16, 16), (2, 16, 24), (1, 16, 16), (1, 16, 24)],
                       pack_tokens=100, patch=(1, 4, 4), shuffle_buffer=1)
    loader = build_loader([(str(videos), 3.0), (str(curated_media), 1.0)], cfg)
    shapes, sources = set(), set()
    for batch in loader:
        assert int(batch["cu_seqlens"][-1]) == batch["num_tokens"] <= 100
        shapes.update(tuple(v.shape) for v in batch["video"])
        sources.update(Path(m["source"]).suffix for m in batch["meta"])
    assert {".png", ".jpg"} & sources and ".mp4" in sources
    assert any(s[0] == 1 for s in shapes) and any(s[0] > 1 for s in shapes)
