"""Whole jobs through the command-line entry points: fit, exact resume, export, generation (1 and 2 ranks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.diffusion.test_trainer_helpers import CAPTIONS, curated  # noqa: F401  (session fixture)

# small and quick: 4 frames of 16 x 16 (pixel latents 12 x 4 x 8 x 8); validation and a sample video
# every 3 steps (they must not disturb training: the resume test compares with runs that stop between)
FAST = ["--set", "data.num_frames=4", "--set", "data.buckets=[[16, 16]]", "--set", "train.val_every=3",
        "--set", "train.checkpoint_every=3", "--set", "sampler.steps=3", "--set", "train.sample_every=3",
        "--set", f"train.sample_prompts=[{json.dumps(CAPTIONS[1])}]"]
STEPS = 6


def _fit(data: Path, out: Path, *extra: str) -> int:
    from diffusion.cli_train import main

    return main(["fit", "--config", "tiny", "--data", str(data), "--out", str(out), "--steps", str(STEPS),
                 *FAST, *extra])


def _losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "loss" in x]
    assert steps == sorted(set(steps)), f"each step logged once, in order: {steps}"
    return {x["step"]: x["loss"] for x in lines if "loss" in x}


@pytest.fixture(scope="session")
def straight_run(curated, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("runs") / "straight"
    assert _fit(curated, run) == 0
    return run


def test_fit_writes_the_run_folder(straight_run):
    run = straight_run
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    assert (run / "text_encoder" / "text_encoder.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    losses = _losses(run)
    assert sorted(losses) == list(range(1, STEPS + 1))
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("step", "loss", "lr", "grad_norm", "samples_per_s"):
        assert key in rec
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert [v["step"] for v in val] == [3, 6] and all(v["val_loss"] > 0 for v in val)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000003-0.mp4", "step-0000006-0.mp4"]


def test_stop_after_and_resume_give_the_same_losses(straight_run, curated, tmp_path):  # noqa: F811
    run = tmp_path / "split"
    # stop at 4 (checkpoints at 3 and 4), then lose checkpoint 4 as if the job died before writing it:
    # --resume restores step 3, drops the logged line of step 4 and redoes it
    assert _fit(curated, run, "--stop-after", "4") == 0
    assert sorted(_losses(run)) == [1, 2, 3, 4]
    shutil.rmtree(run / "checkpoints" / "step-0000004")
    assert _fit(curated, run, "--resume") == 0
    assert _losses(run) == _losses(straight_run)


def test_export_loads_in_diffusers_and_matches(straight_run, tmp_path):
    from diffusers import WanTransformer3DModel

    from diffusion.checkpoint import latest_checkpoint, load_weights
    from diffusion.cli_train import main
    from diffusion.config import load_config
    from diffusion.dit import VideoDiT

    out = tmp_path / "export"
    assert main(["export", "--run", str(straight_run), "--out", str(out)]) == 0
    theirs = WanTransformer3DModel.from_pretrained(str(out)).eval()
    cfg = load_config(str(straight_run / "config.yaml"))
    ours = VideoDiT(cfg.model).eval()
    assert load_weights(latest_checkpoint(straight_run)[1], ours) == "ema"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 12, 2, 8, 8, generator=g)
    t = torch.tensor([500.0])
    text = torch.randn(1, 32, 64, generator=g)
    with torch.no_grad():
        a = ours(x, t, text)
        b = theirs(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    assert (a - b).abs().max() < 1e-5


def _frames(path: Path) -> np.ndarray:
    from diffusion.generate import read_video

    return read_video(path).astype(np.int16)


@pytest.mark.distributed
def test_generate_cp2_tp2_equal_one_rank_and_export_equals_run(straight_run, tmp_path):
    from diffusion.cli_generate import main
    from diffusion.cli_train import main as train_main

    # UniPC with a negative prompt here (the run's sample videos used the config's Euler); the layouts are
    # compared on the .npy frames, before H.264 (whose choices can turn a 1-level difference into more)
    common = ["--prompt", CAPTIONS[0], "--steps", "3", "--guidance", "3.0", "--sampler", "unipc",
              "--negative-prompt", "blurry, static", "--seed", "5"]
    one, mp4 = tmp_path / "one.npy", tmp_path / "one.mp4"
    assert main(["--run", str(straight_run), "--out", str(one), *common]) == 0
    a = np.load(one, allow_pickle=False).astype(np.int16)
    assert a.shape == (4, 16, 16, 3)
    # the mp4 of the same generation holds those frames (H.264 yuv420p halves the chroma of this
    # pixel noise, so compare what survives it: each frame's mean)
    assert main(["--run", str(straight_run), "--out", str(mp4), *common]) == 0
    assert _frames(mp4).shape == a.shape
    assert np.abs(_frames(mp4).mean(axis=(1, 2, 3)) - a.mean(axis=(1, 2, 3))).max() < 3
    # context parallel, tensor parallel (heads and MLP split over 2 ranks), and tensor x context parallel
    for name, layout in (("cp2.npy", ["--nproc", "2", "--cp", "2"]), ("tp2.npy", ["--nproc", "2", "--tp", "2"]),
                         ("tp2cp2.npy", ["--nproc", "4", "--tp", "2", "--cp", "2"])):
        assert main(["--run", str(straight_run), "--out", str(tmp_path / name), *layout, *common]) == 0
        assert np.abs(np.load(tmp_path / name).astype(np.int16) - a).max() <= 1, name
    # the exported diffusers folder generates the same video (same EMA weights)
    assert train_main(["export", "--run", str(straight_run), "--out", str(tmp_path / "export")]) == 0
    assert main(["--checkpoint", str(tmp_path / "export"), "--out", str(tmp_path / "exp.npy"), *common]) == 0
    assert np.abs(np.load(tmp_path / "exp.npy").astype(np.int16) - a).max() <= 1
    # a different seed gives a different video
    other = tmp_path / "other.npy"
    assert main(["--run", str(straight_run), "--out", str(other), *common[:-1], "6"]) == 0
    assert np.abs(np.load(other).astype(np.int16) - a).max() > 1


def test_precompute_then_fit_on_latents(curated, tmp_path):  # noqa: F811
    from dataload.latents import decode_latent_member  # noqa: F401  (the member format we rely on)
    from diffusion.cli_train import main

    lat = tmp_path / "latents"
    sets = ["--set", "data.num_frames=4", "--set", "data.buckets=[[16, 16]]"]
    assert main(["precompute", "--config", "tiny", "--data", str(curated), "--out", str(lat), *sets]) == 0
    info = json.loads((lat / "dataset.json").read_text())
    assert info["kind"] == "latent" and info["num_samples"] == 4
    assert (lat / "text_encoder" / "text_encoder.json").is_file()
    before = sorted(p.stat().st_mtime_ns for p in (lat / "shards").glob("*.tar"))
    assert main(["precompute", "--config", "tiny", "--data", str(curated), "--out", str(lat), *sets]) == 0
    assert sorted(p.stat().st_mtime_ns for p in (lat / "shards").glob("*.tar")) == before  # resumed: nothing redone
    run = tmp_path / "run"
    assert _fit(lat, run, "--stop-after", "2") == 0
    # the run trains and generates with the encoder that made the latents
    a = (lat / "text_encoder" / "model.safetensors").read_bytes()
    assert (run / "text_encoder" / "model.safetensors").read_bytes() == a
    assert sorted(_losses(run)) == [1, 2]
