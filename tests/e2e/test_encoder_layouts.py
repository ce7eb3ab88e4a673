"""The encoders' layouts (parallel.encoders) change who encodes, never what the backbone trains on:
`vfm-train fit` on dp 2 x cp 2 gives the same losses with replicated, colocated and disjoint encoders
(float64: equal to round-off; float32: within float32 rounding), and a disjoint run resumes exactly."""

from __future__ import annotations

import json

import pytest

from tests.diffusion.test_trainer_helpers import write_curated

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

FAST = ["--set", "data.num_frames=4", "--set", "data.buckets=[[16, 16]]", "--set", "train.val_every=2",
        "--set", "train.sample_every=0", "--set", "train.checkpoint_every=2", "--set", "data.batch_size=2",
        "--set", "train.tensorboard=false", "--set", "flow.caption_dropout=0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_curated(tmp_path_factory.mktemp("enc") / "data", num_clips=8)


def _fit(data, run, *extra) -> dict[int, float]:
    from diffusion.cli_train import main

    assert main(["fit", "--config", "tiny", "--data", str(data), "--out", str(run), "--steps", "3",
                 "--dp", "2", "--cp", "2", *FAST, *extra]) == 0
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[("val", rec["step"]) if "val_loss" in rec else rec["step"]] = rec.get("val_loss", rec.get("loss"))
    return out


def test_encoder_layouts_give_the_same_losses(data, tmp_path):
    """float64 DiT (the encoders run in float32 in every mode, each on its own share of the batch)."""
    from diffusion.cli_train import main

    f64 = ["--set", "train.dtype=float64"]
    replicated = _fit(data, tmp_path / "rep", "--nproc", "4", *f64)
    colocated = _fit(data, tmp_path / "col", "--nproc", "4", "--set", "parallel.encoders=colocated", *f64)
    # disjoint: one encoder rank serving both slots, stopped at step 2 and resumed to 3
    dis = tmp_path / "dis"
    assert main(["fit", "--config", "tiny", "--data", str(data), "--out", str(dis), "--steps", "3", "--dp", "2",
                 "--cp", "2", "--nproc", "5", "--encoder-ranks", "1", "--stop-after", "2", *FAST, *f64]) == 0
    disjoint = _fit(data, dis, "--nproc", "5", "--encoder-ranks", "1", "--resume", *f64)
    assert set(replicated) == set(colocated) == set(disjoint) and ("val", 2) in replicated
    for key, want in replicated.items():
        assert abs(colocated[key] - want) <= 1e-12 * abs(want), (key, colocated[key], want)
        assert abs(disjoint[key] - want) <= 1e-12 * abs(want), (key, disjoint[key], want)
    # the encoder rank's loader positions (one per slot it serves) are its part of the checkpoint
    record = json.loads((dis / "checkpoints" / "step-0000003" / "rank-00004.json").read_text())
    assert set(record["loader"]) == {"0", "1"}
