"""Careless and hostile input to `vfm-train` and `vfm-generate`: config values, flags, files of the wrong
kind, a folder in use, a full disk, diverging training. Each is one line on stderr and exit 2, checked
before any rank starts where it can be; nothing hangs, nothing executes."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from tests.reliability.conftest import assert_one_line_error, call
from tests.reliability.train_fixtures import (
    GEN,
    copy_run,
    fit_args,
    losses,
    step_dir,
)

BAD_SETTINGS = {
    "lr overflows to infinity": ("train.optim.lr=1.0e+400", "finite"),
    "lr nan": ("train.optim.lr=.nan", "finite"),
    "lr negative": ("train.optim.lr=-1e-4", "lr must be >= 0"),
    "checkpoint_every zero": ("train.checkpoint_every=0", "checkpoint_every must be >= 1"),
    "log_every negative": ("train.log_every=-2", "log_every must be >= 1"),
    "sample_every negative": ("train.sample_every=-1", "sample_every must be >= 0"),
    "val_every negative": ("train.val_every=-5", "val_every must be >= 0"),
    "warmup negative": ("train.optim.warmup_steps=-1", "warmup_steps must be >= 0"),
    "ema decay one": ("train.ema_decay=1.0", "ema_decay must be in [0, 1)"),
    "ema decay negative": ("train.ema_decay=-0.5", "ema_decay must be in [0, 1)"),
    "grad clip negative": ("train.optim.grad_clip=-1", "grad_clip"),
    "betas out of range": ("train.optim.betas=[0.9, 1.5]", "betas"),
    "steps not an integer": ("train.steps=2.5", "expected an integer"),
    "steps overflow": ("train.steps=1e400", "expected an integer"),
    "batch size zero": ("data.batch_size=0", "batch_size"),
    "bucket not a multiple of the VAE": ("data.buckets=[[15, 16]]", "multiples of 2"),
    "bucket beyond the positions": ("data.buckets=[[4096, 16]]", "rope_max_seq_len"),
    "caption dropout above one": ("flow.caption_dropout=1.5", "caption_dropout"),
    "model width zero": ("model.dim=0", "dim"),
    "channels mismatch": ("model.in_channels=5", "in_channels"),
    "unknown key": ("train.learning_rate=1", "unknown config key"),
    "unknown section": ("nope.x=1", "unknown config key"),
    "wrong type": ("train.seed=abc", "expected an integer"),
    "seed negative": ("train.seed=-1", "seed"),
    "cp mode unknown": ("parallel.cp_mode=tree", "cp_mode"),
    "no equals sign": ("train.seed", "key=value"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_setting_is_refused_before_any_rank(case, curated_data, tmp_path):
    setting, needle = BAD_SETTINGS[case]
    res = call("vfm-train", fit_args(curated_data, tmp_path / "run", 2, "--set", setting))
    assert_one_line_error(res, 2, needle)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_numbers_are_read_as_written(curated_data, tmp_path):
    """`--set train.optim.lr=1e-4` (the example in --help) trains with lr 1e-4."""
    run = tmp_path / "run"
    res = call("vfm-train", fit_args(curated_data, run, 1, "--set", "train.optim.lr=1e-4",
                                     "--set", "train.optim.warmup_steps=0"))
    assert res.rc == 0, res.stderr
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["optim"]["lr"] == 1e-4


BAD_FLAGS = {
    "nproc zero": (["--nproc", "0"], "must be positive"),
    "nproc absurd": (["--nproc", "100000"], "ranks per CPU core"),
    "dp x cp mismatch": (["--nproc", "2", "--dp", "3"], "must equal"),
    "stop-after beyond steps": (["--stop-after", "9"], "--stop-after"),
    "steps zero": (["--steps", "0"], "--steps must be >= 1"),
    "ulysses heads": (["--nproc", "3", "--cp", "3"], "heads per TP rank"),
    "tp heads": (["--nproc", "3", "--tp", "3"], "num_heads"),
    "encoder ranks without room": (["--nproc", "2", "--encoder-ranks", "2"], "encoder rank"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_is_one_line(case, curated_data, tmp_path):
    extra, needle = BAD_FLAGS[case]
    argv = fit_args(curated_data, tmp_path / "run", 2)
    if "--steps" in extra:
        i = argv.index("--steps")
        del argv[i:i + 2]
    res = call("vfm-train", [*argv, *extra])
    assert_one_line_error(res, 2, needle)


@pytest.mark.parametrize("weight", ["inf", "nan", "-1", "0"])
def test_data_weight_must_be_finite_and_positive(weight, curated_data, tmp_path):
    res = call("vfm-train", fit_args(f"{curated_data}={weight}", tmp_path / "run"))
    assert res.rc == 2 and "Traceback" not in res.stderr
    assert "weight must be a finite number > 0" in res.stderr or "no such file" in res.stderr


def _special(kind: str, path):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        return s
    elif kind == "device":
        os.symlink("/dev/zero", path)
    elif kind == "loop":
        os.symlink(path.name + ".b", path)
        os.symlink(path.name, path.with_name(path.name + ".b"))
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(64 << 20)  # sparse: 64 MiB of nothing, declared
    elif kind == "binary":
        path.write_bytes(os.urandom(2000))
    return None


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "loop", "huge", "binary"])
def test_config_file_of_the_wrong_kind(kind, curated_data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    keep = _special(kind, cfg)
    try:
        argv = fit_args(curated_data, tmp_path / "run", 2)
        argv[argv.index("tiny")] = str(cfg)
        res = call("vfm-train", argv)
        assert_one_line_error(res, 2)
    finally:
        if keep is not None:
            keep.close()


def test_yaml_python_tags_never_run(curated_data, tmp_path, canary):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"base: tiny\ntrain:\n  seed: !!python/object/apply:os.mkdir ['{canary.path}']\n")
    argv = fit_args(curated_data, tmp_path / "run", 2)
    argv[argv.index("tiny")] = str(cfg)
    assert_one_line_error(call("vfm-train", argv), 2, "not valid YAML")


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
def test_data_that_is_not_a_folder_of_shards(kind, tmp_path):
    data = tmp_path / "data"
    keep = _special(kind, data)
    try:
        res = call("vfm-train", fit_args(data, tmp_path / "run"))
        assert_one_line_error(res, 2, "--data")
    finally:
        if keep is not None:
            keep.close()


def test_out_is_a_file(curated_data, tmp_path):
    (tmp_path / "run").write_text("x")
    assert_one_line_error(call("vfm-train", fit_args(curated_data, tmp_path / "run")), 2, "not a folder")


def test_resume_of_a_folder_that_is_no_run(curated_data, tmp_path):
    (tmp_path / "run").mkdir()
    res = call("vfm-train", fit_args(curated_data, tmp_path / "run", 2, "--resume"))
    assert_one_line_error(res, 2, "not a training run")


def test_run_in_use_is_refused_naming_the_holder(trained_run, curated_data, tmp_path):
    from dataload.lock import FolderLock

    run = copy_run(trained_run, tmp_path / "run")
    with FolderLock(run, ".lock", command="vfm-train fit (other)"):
        res = call("vfm-train", fit_args(curated_data, run, 3, "--resume"))
    line = assert_one_line_error(res, 2, "in use", "vfm-train fit (other)")
    assert f"pid {os.getpid()}" in line
    assert sorted(losses(run)) == [1, 2]  # untouched


def test_stale_lock_of_a_dead_run_is_taken_over(trained_run, curated_data, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    (run / ".lock").write_text(json.dumps({"command": "vfm-train fit", "pid": 999999, "host": "x"}))
    res = call("vfm-train", fit_args(curated_data, run, 3, "--resume"))
    assert res.rc == 0, res.stderr
    assert sorted(losses(run)) == [1, 2, 3]


def test_resume_with_other_data_is_the_users_line_not_a_rank_error(trained_run, tmp_path):
    """The loader finds, inside the rank, that the checkpoint's data differ: the user reads that line."""
    from tests.diffusion.test_trainer_helpers import write_curated

    other = write_curated(tmp_path / "other", num_clips=6)
    run = copy_run(trained_run, tmp_path / "run")
    res = call("vfm-train", fit_args(other, run, 3, "--resume"))
    line = assert_one_line_error(res, 2, "--resume", "another data set")
    assert "RankError" not in line and "rank 0" not in line


def test_training_that_diverges_stops_before_a_bad_checkpoint(curated_data, tmp_path):
    run = tmp_path / "run"
    res = call("vfm-train", fit_args(curated_data, run, 8, "--set", "train.optim.lr=1e30",
                                     "--set", "train.optim.grad_clip=0", "--set", "train.optim.warmup_steps=0",
                                     "--set", "train.max_nonfinite_steps=2"))
    assert_one_line_error(res, 2, "training stopped")
    import torch

    from diffusion.checkpoint import list_checkpoints, load_weights
    from diffusion.config import load_config
    from diffusion.dit import VideoDiT

    for _, ckpt in list_checkpoints(run):  # whatever was written holds finite weights only
        model = VideoDiT(load_config(str(run / "config.yaml")).model)
        load_weights(ckpt, model, prefer_ema=False)
        assert all(torch.isfinite(p).all() for p in model.parameters()), ckpt
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("skipped") for r in records) or len(records) < 8


def test_full_disk_is_one_line_with_the_path(curated_data, tmp_path, small_disk):
    disk = small_disk("1500k")
    run = disk / "run"
    res = call("vfm-train", fit_args(curated_data, run, 2))
    line = assert_one_line_error(res, 2, "No space left on device")
    assert str(disk) in line
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")] if run.exists() else []
    assert not leftovers, leftovers


# ------------------------------------------------------------------------------------------------ generation

BAD_GENERATE = {
    "empty prompt": (["--prompt", ""], "--prompt is empty"),
    "blank prompt": (["--prompt", "  \t "], "--prompt is empty"),
    "frames zero": (["--frames", "0"], "--frames must be >= 1"),
    "odd height": (["--height", "15"], "multiples of 2"),
    "huge size": (["--height", "60000", "--width", "60000"], "rope_max_seq_len"),
    "too much memory": (["--height", "1024", "--width", "1024", "--frames", "256"], "needs about"),
    "guidance nan": (["--guidance", "nan"], "--guidance must be a finite number"),
    "guidance negative": (["--guidance", "-2"], "--guidance must be a finite number"),
    "fps zero": (["--fps", "0"], "--fps must be a finite number"),
    "seed negative": (["--seed", "-1"], "--seed"),
    "steps zero": (["--steps", "0"], "--steps must be >= 1"),
    "cp without ranks": (["--nproc", "2", "--cp", "1"], "must equal --cp"),
    "not mp4": (["--out", "video.avi"], "must end in .mp4"),
}


@pytest.mark.parametrize("case", sorted(BAD_GENERATE))
def test_bad_generation_request_is_refused_before_loading(case, trained_run, tmp_path):
    extra, needle = BAD_GENERATE[case]
    argv = ["--run", trained_run, "--prompt", "a red ball", "--out", tmp_path / "v.mp4", *GEN]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    res = call("vfm-generate", argv)
    assert_one_line_error(res, 2, needle)
    assert not (tmp_path / "v.mp4").exists()


def test_existing_out_is_kept_unless_overwrite(trained_run, tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"precious")
    argv = ["--run", trained_run, "--prompt", "a red ball", "--out", out, *GEN]
    assert_one_line_error(call("vfm-generate", argv), 2, "--overwrite")
    assert out.read_bytes() == b"precious"
    res = call("vfm-generate", [*argv, "--overwrite"])
    assert res.rc == 0, res.stderr
    assert out.read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize("case", ["missing run", "file as run", "empty folder", "run without checkpoints",
                                  "missing out folder"])
def test_generation_sources_that_are_not_there(case, trained_run, tmp_path):
    src, out = tmp_path / "nope", tmp_path / "v.mp4"
    if case == "file as run":
        src.write_text("x")
    elif case == "empty folder":
        src.mkdir()
    elif case == "run without checkpoints":
        src = copy_run(trained_run, tmp_path / "run")
        import shutil

        shutil.rmtree(src / "checkpoints")
    elif case == "missing out folder":
        src, out = trained_run, tmp_path / "no" / "such" / "v.mp4"
    flag = "--checkpoint" if case in ("empty folder", "file as run") else "--run"
    res = call("vfm-generate", [flag, src, "--prompt", "a ball", "--out", out, *GEN])
    assert_one_line_error(res, 2)


def test_checkpoint_step_folder_swapped_for_a_symlink(trained_run, tmp_path):
    """A step folder that is a symlink (to anywhere) is not a checkpoint of the run."""
    run = copy_run(trained_run, tmp_path / "run")
    import shutil

    target = tmp_path / "elsewhere"
    shutil.move(step_dir(run, 2), target)
    os.symlink(target, step_dir(run, 2))
    res = call("vfm-train", ["export", "--run", run, "--out", tmp_path / "e"])
    assert res.rc == 0, res.stderr
    info = json.loads((tmp_path / "e" / "config.json").read_text())
    assert info["num_layers"] >= 1


def _with_garbage_clip(src, dest):
    """A copy of a curated folder whose first clip's video bytes are garbage (its JSON is fine)."""
    from dataload.shards import ShardWriter, list_shards, read_shard

    (dest / "shards").mkdir(parents=True)
    (dest / "dataset.json").write_text((src / "dataset.json").read_text())
    with ShardWriter(dest / "shards", max_samples_per_shard=2) as w:
        for shard in list_shards(src / "shards"):
            for sample in read_shard(shard):
                members = {k: v for k, v in sample.items() if not k.startswith("__")}
                if sample["__key__"] == "clip000":
                    members["mp4"] = os.urandom(len(members["mp4"]))
                w.write(sample["__key__"], members)
    return dest


@pytest.mark.distributed
def test_a_garbage_clip_is_skipped_on_every_rank_together(curated_data, tmp_path):
    """Batch size 1 on 2 data-parallel ranks: the rank whose only clip is garbage has an empty batch; both
    ranks skip that draw, training goes on, and the skip is counted."""
    data = _with_garbage_clip(curated_data, tmp_path / "data")
    run = tmp_path / "run"
    res = call("vfm-train", fit_args(data, run, 4, "--nproc", "2", "--set", "data.batch_size=1",
                                     "--set", "train.checkpoint_every=4"))
    assert res.rc == 0, res.stderr
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["skipped_batches"] >= 1
    assert all(np.isfinite(r["loss"]) for r in records)
