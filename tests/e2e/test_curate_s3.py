"""Inputs and OUT on object storage, against moto's standalone S3 server started here on 127.0.0.1: a
round trip (videos and captions read from the bucket, every output written back to it), the bucket
holding the truth (a rerun from another machine's empty staging folder resumes from it), and kill -9 of
a run mid-way then the same command again equal to the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.cli import main
from tests.curate.corpus import comparable, read_shards, two_shot_video

REPO = Path(__file__).resolve().parents[2]
NUM_VIDEOS = 4


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("moto")
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bkt")
        videos = tmp_path_factory.mktemp("s3_videos")
        for i in range(NUM_VIDEOS):
            two_shot_video(videos / f"v{i}.mp4", seed=100 + 7 * i)
        (videos / "v0.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\na pan over hills\n")
        fs.put(str(videos) + "/", "bkt/in/", recursive=True)
        yield {"fs": fs, "env": env}
    server.kill()
    server.wait()


def _download(fs, prefix: str, dest: Path) -> Path:
    fs.invalidate_cache()
    dest.mkdir(parents=True)
    fs.get(f"{prefix}/shards/", str(dest / "shards") + "/", recursive=True)
    for name in ("clips.parquet", "sources.parquet", "dataset.json"):
        fs.get_file(f"{prefix}/{name}", str(dest / name))
    return dest


def _args(out: str) -> list[str]:
    return ["run", "s3://bkt/in", "--out", out, "--workers", "2", "--set", "write.max_clips_per_shard=3"]


@pytest.mark.slow
def test_round_trip_and_kill_then_resume_from_the_bucket(s3, tmp_path, monkeypatch):
    fs = s3["fs"]
    monkeypatch.setenv("VFM_CURATE_STAGING", str(tmp_path / "staging_a"))
    assert main(_args("s3://bkt/ref")) == 0
    ref = _download(fs, "bkt/ref", tmp_path / "ref")
    expected = comparable(read_shards(ref))
    assert len(expected) >= NUM_VIDEOS
    rows = pq.read_table(ref / "clips.parquet").to_pylist()
    assert {r["source"] for r in rows} == {f"s3://bkt/in/v{i}.mp4" for i in range(NUM_VIDEOS)}
    assert any(r["caption"] == "a pan over hills" for r in rows)  # the .srt beside the video in the bucket
    dataset = json.loads((ref / "dataset.json").read_text())
    assert dataset["num_clips"] == len(expected) and dataset["num_shards"] == len(list((ref / "shards").iterdir()))

    # kill -9 of the whole run once a source is committed in the bucket; the rerun starts from another
    # (empty) staging folder, as on another machine: only the bucket tells it what is done
    env = dict(os.environ, PYTHONPATH=str(REPO), VFM_CURATE_STAGING=str(tmp_path / "staging_b"), **s3["env"])
    cmd = [sys.executable, "-m", "curate.cli", *_args("s3://bkt/out")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            fs.invalidate_cache()
            if fs.glob("bkt/out/_state/sources/*/record.json"):
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    fs.invalidate_cache()
    n_done = len(fs.glob("bkt/out/_state/sources/*/record.json"))
    assert proc.returncode == -signal.SIGKILL and 0 < n_done < NUM_VIDEOS, (proc.returncode, n_done)
    assert not fs.exists("bkt/out/dataset.json")

    env["VFM_CURATE_STAGING"] = str(tmp_path / "staging_c")
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{NUM_VIDEOS - n_done} processed now, {n_done} resumed" in rerun.stdout
    got = comparable(read_shards(_download(fs, "bkt/out", tmp_path / "got")))
    assert got == expected  # same clip ids, bytes and metadata as the uninterrupted run


def test_foreign_prefix_and_missing_bucket_are_one_line_errors(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VFM_CURATE_STAGING", str(tmp_path / "staging"))
    assert main(["run", "s3://bkt/in/v1.mp4", "--out", "s3://bkt/in", "--workers", "0"]) == 2
    assert main(["run", "s3://bkt/in/v1.mp4", "--out", "s3://no-such-bucket/out", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "holds no curation run" in err[0] and "s3://bkt/in" in err[0]
    assert "s3://no-such-bucket/out" in err[1]
