"""Shards are written by the workers, the driver merges their manifests: the same shard bytes as a run
whose one process writes them (`--workers 0`), each shard listed in dataset.json with its size and
sha256, and the layout (input order, then start frame; `write.max_clips_per_shard` a shard) the same."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from curate.cli import main
from tests.curate.corpus import mixed_video, two_shot_video


@pytest.mark.slow
def test_workers_write_the_shards_and_the_driver_merges_manifests(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    mixed_video(videos / "a.mp4", seed=0)
    two_shot_video(videos / "b.mp4", seed=3)
    tars: dict[str, dict[str, bytes]] = {}
    for workers in ("0", "2"):
        out = tmp_path / f"out{workers}"
        assert main(["run", str(videos), "--out", str(out), "--workers", workers,
                     "--set", "write.max_clips_per_shard=1"]) == 0
        dataset = json.loads((out / "dataset.json").read_text())
        files = {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}
        assert len(files) == dataset["num_shards"] == dataset["num_clips"] >= 3
        assert [m["name"] for m in dataset["shard_manifest"]] == sorted(files)
        for m in dataset["shard_manifest"]:
            data = files[m["name"]]
            assert m["bytes"] == len(data) and m["sha256"] == hashlib.sha256(data).hexdigest()
            assert m["num_samples"] == 1
        writers = json.loads((out / "_state" / "shards.json").read_text())
        pids = {int(w["writer"].rsplit(":", 1)[1]) for w in writers}
        if workers == "0":
            assert pids == {os.getpid()}  # no workers: the command's own process is the worker
        else:
            assert os.getpid() not in pids  # worker processes wrote every shard
        assert not (out / "shards.building").exists()
        tars[workers] = files
    assert tars["0"] == tars["2"]  # byte for byte, shard for shard
