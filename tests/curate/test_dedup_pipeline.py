"""Dedup in a whole run: a folder holding a video twice (once re-encoded smaller at a lower bitrate), a
near-duplicate pair (a mirrored copy, which perceptual hashes miss and embeddings catch) and a unique
video keeps one clip of each group and names the kept one in the other's reject_reason."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.stages.clip_scores.tiny import save_tiny_clip
from curate.stages.dedup.algorithm import hamming, phash


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import cv2

    from dataload.synthetic import Shot, render_frames, write_video

    root = tmp_path_factory.mktemp("dedup_inputs")
    videos = root / "videos"
    videos.mkdir()

    def frames(kind, seed):
        return list(render_frames([Shot(kind, 64, seed=seed)], [], 256, 144, seed))

    a = frames("pan", 1)
    write_video(videos / "a_original.mp4", a, crf=18)
    small = [cv2.resize(f, (128, 72), interpolation=cv2.INTER_AREA) for f in a]
    write_video(videos / "a_reupload_small.mp4", small, crf=34)  # another size and bitrate
    b = frames("objects", 2)
    write_video(videos / "b.mp4", b, crf=18)
    mirrored = [np.ascontiguousarray(f[:, ::-1]) for f in b]
    write_video(videos / "b_mirrored.mp4", mirrored, crf=18)
    write_video(videos / "c_unique.mp4", frames("zoom", 3), crf=18)
    # the mirrored pair must be a job for the embeddings: its hashes are far apart
    assert int(hamming(np.array([phash(b[32])], np.uint64), np.array([phash(mirrored[32])], np.uint64))[0]) > 16
    return {"videos": videos, "clip": str(save_tiny_clip(root / "clip"))}


@pytest.mark.slow
def test_duplicates_are_named_and_one_of_each_group_kept(folder, tmp_path):
    out = tmp_path / "out"
    code = main(["run", str(folder["videos"]), "--out", str(out), "--workers", "2",
                 "--set", "models.embedding.enabled=true", "--set", f"models.clip.model={folder['clip']}",
                 "--set", "models.dedup.enabled=true", "--set", "models.dedup.cosine_threshold=0.95"])
    assert code == 0
    clips = pq.read_table(out / "clips.parquet").to_pylist()
    by_video: dict[str, list[dict]] = {}
    for c in clips:
        by_video.setdefault(c["source"].rsplit("/", 1)[-1], []).append(c)
    assert all(len(v) == 1 for v in by_video.values()), {k: len(v) for k, v in by_video.items()}
    clip = {k: v[0] for k, v in by_video.items()}
    assert clip["a_original.mp4"]["status"] == "kept"  # the higher resolution copy
    assert clip["a_reupload_small.mp4"]["reject_reason"] == f"duplicate_of:{clip['a_original.mp4']['clip_id']}"
    pair = sorted([clip["b.mp4"], clip["b_mirrored.mp4"]], key=lambda c: c["clip_id"])
    assert pair[0]["status"] == "kept"  # same resolution: the lower clip id stays
    assert pair[1]["reject_reason"] == f"duplicate_of:{pair[0]['clip_id']}"
    assert clip["c_unique.mp4"]["status"] == "kept"
    # the barrier is exact on resume: the same command again gives the same verdicts (in-process workers:
    # nothing is left to decode, only the barrier runs again)
    assert main(["run", str(folder["videos"]), "--out", str(out), "--workers", "0",
                 "--set", "models.embedding.enabled=true", "--set", f"models.clip.model={folder['clip']}",
                 "--set", "models.dedup.enabled=true", "--set", "models.dedup.cosine_threshold=0.95"]) == 0
    assert pq.read_table(out / "clips.parquet").to_pylist() == clips
