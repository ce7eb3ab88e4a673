"""`vfm-train` / `vfm-generate` on bad input: one clear line on stderr and exit 2, never a traceback;
--help explains every command; config presets, YAML files and --set overrides."""

from __future__ import annotations

import json

import pytest

from tests.diffusion.test_trainer_helpers import curated  # noqa: F401  (session fixture)


def _one_error_line(capsys, status: int, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1, err
    assert "error" in err[0] and needle in err[0], err[0]
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("argv", [[], ["fit"], ["precompute"], ["export"]])
def test_train_help(argv, capsys):
    from diffusion.cli_train import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: vfm-train" in out


def test_generate_help(capsys):
    from diffusion.cli_generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--run", "--checkpoint", "--negative-prompt", "--sampler", "--cp", "--guidance"):
        assert flag in out


def test_fit_bad_inputs(curated, tmp_path, capsys):  # noqa: F811
    from diffusion.cli_train import main

    base = ["fit", "--data", str(curated)]
    _one_error_line(capsys, main(["fit", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]),
                    "no such file")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--nproc", "3", "--cp", "2"]),
                    "--nproc 3")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--nproc", "4", "--dp", "3", "--cp", "2"]),
                    "dp x cp x tp")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--set", "train.nope=1"]), "train.nope")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--set", "train.steps=abc"]), "integer")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--config", "wan-7b"]), "wan-7b")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--stop-after", "9", "--steps", "5"]),
                    "--stop-after")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "r"), "--cp", "3", "--nproc", "3"]), "heads")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_error_line(capsys, main(["fit", "--data", str(empty), "--out", str(tmp_path / "r")]), "no shards")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "something").write_text("x")
    _one_error_line(capsys, main([*base, "--out", str(existing)]), "already exists")
    _one_error_line(capsys, main([*base, "--out", str(tmp_path / "fresh"), "--resume"]), "--resume")
    # a run folder left by a start that failed before any checkpoint is not "existing"
    from diffusion.fit import _failed_start

    failed = tmp_path / "failed"
    (failed / "text_encoder").mkdir(parents=True)
    (failed / "config.yaml").write_text("x")
    assert _failed_start(failed)
    (failed / "checkpoints" / "step-0000001").mkdir(parents=True)
    assert not _failed_start(failed)
    assert not _failed_start(existing)
    assert not (tmp_path / "r").exists()


def test_export_and_generate_bad_inputs(tmp_path, capsys):
    from diffusion.cli_generate import main as gen
    from diffusion.cli_train import main as train

    _one_error_line(capsys, train(["export", "--run", str(tmp_path), "--out", str(tmp_path / "e")]), "not a training run")
    _one_error_line(capsys, gen(["--run", str(tmp_path / "nope"), "--prompt", "x", "--out", str(tmp_path / "a.mp4")]),
                    "no such folder")
    _one_error_line(capsys, gen(["--run", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "a.mp4"),
                                 "--nproc", "2", "--cp", "1"]), "--nproc 2")
    _one_error_line(capsys, gen(["--run", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "a.avi")]), ".mp4")
    _one_error_line(capsys, gen(["--checkpoint", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "a.mp4")]),
                    "neither")


def test_config_presets_files_and_overrides(tmp_path):
    from diffusion.config import ConfigError, config_to_yaml, load_config, preset

    for name in ("tiny", "wan-1.3b", "wan-14b"):
        cfg = preset(name)
        assert cfg.model.in_channels == (12 if name == "tiny" else 16)
    tiny = load_config("tiny", ["train.optim.lr=0.25", "data.buckets=[[16, 16]]", "sampler.name=unipc"])
    assert tiny.train.optim.lr == 0.25 and tiny.data.buckets == [(16, 16)] and tiny.sampler.name == "unipc"
    full = tmp_path / "full.yaml"
    full.write_text(config_to_yaml(tiny))
    assert load_config(str(full)) == tiny
    partial = tmp_path / "partial.yaml"
    partial.write_text("base: tiny\ntrain:\n  steps: 7\nmodel:\n  num_layers: 3\n")
    cfg = load_config(str(partial))
    assert cfg.train.steps == 7 and cfg.model.num_layers == 3 and cfg.model.dim == preset("tiny").model.dim
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ntrain:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="sampler"):
        load_config("tiny", ["sampler.name=heun"])


def test_metrics_truncation_keeps_restored_steps(tmp_path):
    from diffusion.fit import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in range(1, 6)))
    truncate_metrics(path, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
