"""`vfm-train eval --json` on a tiny trained run (2 steps, a 2-prompt file), and the run's TensorBoard
events read back with tensorboard's own reader. Cheap on purpose: what is measured is the contract, not
the accuracy (the demo benchmark measures that)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.diffusion.test_trainer_helpers import curated  # noqa: F401  (session fixture)

SEEN = "a red circle moves up on a black background"
HELD_OUT = "a red square moves to the left on a dark gray background"
FAST = ["--steps", "2", "--set", "data.num_frames=4", "--set", "data.buckets=[[32, 32]]",
        "--set", "sampler.steps=2", "--set", "train.val_every=1", "--set", "train.sample_every=2",
        "--set", f"train.sample_prompts=[{json.dumps(SEEN)}]"]


def _fit(data: Path, run: Path, *extra: str) -> int:
    from diffusion.cli_train import main

    return main(["fit", "--config", "tiny", "--data", str(data), "--out", str(run), *FAST, *extra])


@pytest.fixture(scope="module")
def tiny_run(curated, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("eval") / "run"
    assert _fit(curated, run) == 0
    return run


def test_eval_json_holds_the_documented_keys(tiny_run, tmp_path, capsys):
    from diffusion.cli_train import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# one seen, one held out\n{SEEN}\n" + json.dumps({"prompt": HELD_OUT, "seeds": [3]}) + "\n")
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["eval", "--run", str(tiny_run), "--prompts", str(prompts), "--out", str(out), "--seeds", "1",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("color_accuracy", "direction_accuracy", "shape_accuracy", "heldout_color_accuracy",
                "heldout_direction_accuracy", "heldout_shape_accuracy", "seen_color_accuracy", "num_videos"):
        assert key in summary, key
    assert summary["num_videos"] == 2 and summary["num_heldout_videos"] == 1
    assert all(0.0 <= summary[k] <= 1.0 for k in summary if k.endswith("_accuracy"))
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"], r["heldout"]) for r in records] == [(SEEN, 0, False), (HELD_OUT, 3, True)]
    assert records[1]["expected"] == {"color": "red", "shape": "square", "direction": "left",
                                      "background": "dark gray"}
    for name in ("grid.png", "table.md", "summary.json", "videos/000.mp4", "videos/001.mp4"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["num_videos"] == 2


def test_eval_refuses_a_prompt_outside_the_world_in_one_line(tiny_run, tmp_path, capsys):
    from diffusion.cli_train import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a purple cat sleeps on a sofa\n")
    assert main(["eval", "--run", str(tiny_run), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a caption of the shapes world" in err[0]


def test_tensorboard_events_are_written_and_readable(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run / "tb"))
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "train/tokens_per_s",
                "val/loss"):
        assert tag in tags["scalars"], tag
    logged = {r["step"]: r for r in map(json.loads, (tiny_run / "metrics.jsonl").read_text().splitlines())
              if "loss" in r}
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [1, 2]
    assert all(abs(e.value - logged[e.step]["loss"]) <= 1e-6 * max(1.0, abs(e.value)) for e in events)
    assert [e.step for e in acc.Scalars("val/loss")] == [1, 2]
    assert "samples/0" in tags["images"]
    image = acc.Images("samples/0")[0]
    assert image.step == 2 and image.width > image.height > 0  # a strip of frames side by side


def test_tensorboard_off_writes_no_events(curated, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    assert _fit(curated, run, "--set", "train.tensorboard=false") == 0
    assert (run / "metrics.jsonl").is_file() and not (run / "tb").exists()
