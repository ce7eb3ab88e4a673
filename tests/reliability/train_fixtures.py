"""A tiny trained run shared by the training and generation cases (made once per session), and ways to
damage copies of it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.diffusion.test_trainer_helpers import write_curated
from tests.reliability.conftest import call

# the smallest run that exercises everything: 4-frame 16 x 16 clips, a checkpoint at every step
FAST = ["--set", "data.num_frames=4", "--set", "data.buckets=[[16, 16]]", "--set", "train.val_every=0",
        "--set", "train.sample_every=0", "--set", "train.checkpoint_every=1", "--set", "sampler.steps=2",
        "--set", "train.log_every=1"]
GEN = ["--frames", "4", "--height", "16", "--width", "16", "--steps", "2"]


def fit_args(data: Path, out: Path, steps: int = 2, *extra: str) -> list[str]:
    return ["fit", "--config", "tiny", "--data", str(data), "--out", str(out), "--steps", str(steps), *FAST, *extra]


@pytest.fixture(scope="session")
def curated_data(tmp_path_factory) -> Path:
    return write_curated(tmp_path_factory.mktemp("rel-curated"))


@pytest.fixture(scope="session")
def trained_run(curated_data, tmp_path_factory) -> Path:
    """A finished 2-step run with checkpoints step-0000001 and step-0000002 (never modified: copy it)."""
    run = tmp_path_factory.mktemp("rel-runs") / "run"
    res = call("vfm-train", fit_args(curated_data, run))
    assert res.rc == 0, res.stderr
    return run


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    lock = dest / ".lock"
    if lock.exists():
        lock.unlink()
    return dest


def losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:07d}"


def data_file(ckpt: Path) -> Path:
    return sorted(ckpt.glob("*.distcp"))[0]


# name -> function(checkpoint folder): every way a checkpoint can be damaged that we promise to detect
def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name + ".b", path)
    os.symlink(path.name, path.with_name(path.name + ".b"))


DAMAGE = {
    "metadata truncated": lambda c: _truncate(c / ".metadata"),
    "metadata garbage": lambda c: (c / ".metadata").write_bytes(os.urandom(300)),
    "metadata empty": lambda c: (c / ".metadata").write_bytes(b""),
    "metadata missing": lambda c: (c / ".metadata").unlink(),
    "metadata is a FIFO": lambda c: _fifo(c / ".metadata"),
    "metadata is a symlink loop": lambda c: _loop(c / ".metadata"),
    "metadata is a folder": lambda c: ((c / ".metadata").unlink(), (c / ".metadata").mkdir()),
    "data file truncated": lambda c: _truncate(data_file(c), 0.3),
    "data file missing": lambda c: data_file(c).unlink(),
    "data file is a FIFO": lambda c: _fifo(data_file(c)),
    "data file is /dev/zero": lambda c: (data_file(c).unlink(), os.symlink("/dev/zero", data_file_name(c))),
    "rank record torn": lambda c: _truncate(c / "rank-00000.json", 0.5),
    "rank record missing": lambda c: (c / "rank-00000.json").unlink(),
    "rank record not an object": lambda c: (c / "rank-00000.json").write_text("[1, 2]"),
    "rank record wrong step": lambda c: (c / "rank-00000.json").write_text(json.dumps({"step": 99})),
    "rng state garbage": lambda c: (c / "rank-00000.rng.safetensors").write_bytes(b"\x10\x00\x00\x00" + b"{" * 40),
    "checkpoint empty": lambda c: [p.unlink() for p in list(c.iterdir())],
}


def data_file_name(ckpt: Path) -> Path:
    return ckpt / "__0_0.distcp"
