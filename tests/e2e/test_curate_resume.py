"""kill -9 of the whole process group mid-run, then the same command again: the same clip ids and the same
clip bytes as an uninterrupted run, nothing twice, no partial tar. The killed run uses worker processes and
the reference runs inline, so this also shows the executors agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.cli import main
from tests.curate.corpus import comparable, read_shards, two_shot_video

REPO = Path(__file__).resolve().parents[2]
NUM_VIDEOS = 4


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_corpus")
    for i in range(NUM_VIDEOS):
        two_shot_video(root / f"v{i}.mp4", seed=100 + 7 * i)
    return root


def _cmd(videos: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "curate.cli", "run", str(videos), "--out", str(out), "--workers", "2",
            "--set", "write.max_clips_per_shard=3"]


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(videos, tmp_path):
    ref = tmp_path / "ref"
    assert main(["run", str(videos), "--out", str(ref), "--workers", "0",
                 "--set", "write.max_clips_per_shard=3"]) == 0
    expected = comparable(read_shards(ref))
    assert len(expected) >= NUM_VIDEOS

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(_cmd(videos, out), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = out / "_state" / "sources"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if committed.is_dir() and len(list(committed.iterdir())) >= 1:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every worker at once
        proc.wait()
    n_done = len(list(committed.iterdir())) if committed.is_dir() else 0
    assert proc.returncode == -signal.SIGKILL and 0 < n_done < NUM_VIDEOS, (proc.returncode, n_done)

    rerun = subprocess.run(_cmd(videos, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{NUM_VIDEOS - n_done} processed now, {n_done} resumed" in rerun.stdout
    got = comparable(read_shards(out))
    assert set(got) == set(expected)
    assert got == expected  # same clip bytes and metadata
    assert not list((out / "_state" / "tmp").iterdir())
