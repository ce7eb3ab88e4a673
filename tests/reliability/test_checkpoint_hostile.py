"""Hostile and damaged checkpoints: nothing in a checkpoint ever executes, a damaged newest checkpoint is
passed over with one warning (resume, export and generation use the previous complete one), and when
none is usable the command says so in one line with exit 2."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from tests.reliability.conftest import assert_one_line_error, call
from tests.reliability.train_fixtures import (
    DAMAGE,
    GEN,
    copy_run,
    fit_args,
    losses,
    step_dir,
)


def _metadata_with(canary_path, run_step_dir):
    """The checkpoint's real metadata with a canary smuggled into it (a pickle that runs os.mkdir)."""
    from tests.reliability.conftest import _Canary

    return pickle.dumps({"metadata": pickle.loads((run_step_dir / ".metadata").read_bytes()),
                         "x": _Canary(canary_path)}, protocol=2)


@pytest.mark.parametrize("where", ["metadata replaced", "metadata wrapped"])
def test_pickled_metadata_never_runs_in_generate(trained_run, tmp_path, canary, where):
    run = copy_run(trained_run, tmp_path / "run")
    for step in (1, 2):
        ckpt = step_dir(run, step)
        payload = canary.payload() if where == "metadata replaced" else _metadata_with(canary.path, ckpt)
        (ckpt / ".metadata").write_bytes(payload)
    res = call("vfm-generate", ["--run", run, "--prompt", "a red ball", "--out", tmp_path / "v.mp4", *GEN])
    assert_one_line_error(res, 2, "no complete checkpoint")
    assert "mkdir" in res.stderr or "not a readable" in res.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_pickled_metadata_never_runs_with_checkpoint_flag(trained_run, tmp_path, canary):
    import torch.distributed.checkpoint as dcp

    run = copy_run(trained_run, tmp_path / "run")
    (step_dir(run, 2) / ".metadata").write_bytes(canary.payload())
    try:  # the hole this closes: DCP's own reader executes the metadata
        dcp.FileSystemReader(str(step_dir(run, 2))).read_metadata()
    except Exception:
        pass
    assert canary.path.is_dir()
    canary.path.rmdir()
    res = call("vfm-generate", ["--checkpoint", step_dir(run, 2), "--prompt", "a red ball",
                                "--out", tmp_path / "v.mp4", *GEN])
    assert_one_line_error(res, 2, "refuses to load posix.mkdir")


def test_pickled_metadata_never_runs_in_export(trained_run, tmp_path, canary):
    run = copy_run(trained_run, tmp_path / "run")
    for step in (1, 2):
        (step_dir(run, step) / ".metadata").write_bytes(canary.payload())
    res = call("vfm-train", ["export", "--run", run, "--out", tmp_path / "export"])
    assert_one_line_error(res, 2, "no complete checkpoint")
    assert not (tmp_path / "export").exists()


def test_pickled_metadata_in_newest_checkpoint_resume_falls_back(trained_run, curated_data, tmp_path, canary):
    run = copy_run(trained_run, tmp_path / "run")
    (step_dir(run, 2) / ".metadata").write_bytes(canary.payload())
    res = call("vfm-train", fit_args(curated_data, run, 3, "--resume"))
    assert res.rc == 0, res.stderr
    warning = [line for line in res.err_lines if "warning" in line]
    assert len(warning) == 1 and "step-0000002 is damaged" in warning[0] and "step-0000001" in warning[0]
    assert sorted(losses(run)) == [1, 2, 3]  # step 2 redone from step 1


def _bytes_item_canary_checkpoint(run, canary_path):
    """Rewrite step 2 as a real DCP checkpoint whose optimizer hyper-parameter (a "bytes" item, loaded with
    torch.load) is a pickle that runs code: DCP's own planner would execute it."""
    import torch.distributed.checkpoint as dcp

    from diffusion.config import load_config
    from diffusion.dit import VideoDiT
    from diffusion.optim import build_optimizer, build_scheduler
    from tests.reliability.conftest import _Canary

    cfg = load_config(str(run / "config.yaml"))
    model = VideoDiT(cfg.model)
    opt = build_optimizer(model.parameters(), cfg.train.optim)
    build_scheduler(opt, cfg.train.optim, 3)
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    optim_sd["param_groups"][0]["lr"] = _Canary(canary_path)
    ckpt = step_dir(run, 2)
    for p in ckpt.glob("*.distcp"):
        p.unlink()
    (ckpt / ".metadata").unlink()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ema = {n: p.detach().clone() for n, p in model.named_parameters()}
        dcp.save({"model": model_sd, "optim": optim_sd, "ema": ema}, checkpoint_id=str(ckpt), no_dist=True)


def test_pickled_optimizer_item_never_runs_on_resume(trained_run, curated_data, tmp_path, canary):
    import warnings

    import torch.distributed.checkpoint as dcp

    run = copy_run(trained_run, tmp_path / "run")
    _bytes_item_canary_checkpoint(run, canary.path)
    # the hole this closes: DCP's own planner executes the item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"optim.param_groups.0.lr": 0.0}, checkpoint_id=str(step_dir(run, 2)), no_dist=True,
                 planner=dcp.DefaultLoadPlanner(allow_partial_load=True, flatten_state_dict=False))
    assert canary.path.is_dir()
    canary.path.rmdir()
    res = call("vfm-train", fit_args(curated_data, run, 3, "--resume"))
    assert res.rc == 0, res.stderr
    assert any("step-0000002 could not be loaded" in line for line in res.err_lines), res.stderr
    assert sorted(losses(run)) == [1, 2, 3]


def test_storage_entry_pointing_outside_is_refused(trained_run, tmp_path, canary):
    from diffusion.safe_dcp import CheckpointError, read_metadata

    run = copy_run(trained_run, tmp_path / "run")
    ckpt = step_dir(run, 2)
    md = read_metadata(ckpt)
    for info in md.storage_data.values():
        info.relative_path = "../../../../etc/passwd"
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(CheckpointError, match="not a file inside the checkpoint"):
        read_metadata(ckpt)
    res = call("vfm-train", ["export", "--run", run, "--out", tmp_path / "e"])
    assert res.rc == 0 and "step-0000002 is damaged" in res.stderr  # exported step 1 instead


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_passed_over(trained_run, tmp_path, damage):
    """export reads the newest complete checkpoint: one warning naming the damage, exit 0."""
    run = copy_run(trained_run, tmp_path / "run")
    DAMAGE[damage](step_dir(run, 2))
    res = call("vfm-train", ["export", "--run", run, "--out", tmp_path / "export"])
    assert res.rc == 0, res.stderr
    lines = [x for x in res.err_lines if "warning" in x]
    assert len(lines) == 1 and "step-0000002 is damaged" in lines[0] and "exporting step-0000001" in lines[0]
    assert (tmp_path / "export" / "diffusion_pytorch_model.safetensors").is_file()


def test_every_checkpoint_damaged_is_one_line(trained_run, curated_data, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    DAMAGE["metadata garbage"](step_dir(run, 1))
    DAMAGE["data file missing"](step_dir(run, 2))
    res = call("vfm-train", fit_args(curated_data, run, 3, "--resume"))
    assert_one_line_error(res, 2, "no complete checkpoint")


def test_damaged_checkpoint_named_directly_is_one_line(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    DAMAGE["data file truncated"](step_dir(run, 2))
    res = call("vfm-generate", ["--checkpoint", step_dir(run, 2), "--prompt", "a ball",
                                "--out", tmp_path / "v.mp4", *GEN])
    assert_one_line_error(res, 2, "truncated")


def test_generate_run_falls_back_to_previous_checkpoint(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    DAMAGE["metadata truncated"](step_dir(run, 2))
    res = call("vfm-generate", ["--run", run, "--prompt", "a red ball", "--out", tmp_path / "v.mp4", *GEN])
    assert res.rc == 0, res.stderr
    assert "step-0000002 is damaged" in res.stderr and "using step-0000001" in res.stderr
    info = json.loads((tmp_path / "v.json").read_text())
    assert "step-0000001" in info["weights"]


def test_torn_metrics_line_does_not_block_resume(trained_run, curated_data, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.4')  # a kill in the middle of a line
    res = call("vfm-train", fit_args(curated_data, run, 3, "--resume"))
    assert res.rc == 0, res.stderr
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]


def test_diffusers_folder_with_pickle_weights_never_runs(trained_run, tmp_path, canary):
    """A model folder may only give weights as safetensors: a .bin pickle is never opened."""
    out = tmp_path / "export"
    assert call("vfm-train", ["export", "--run", trained_run, "--out", out]).rc == 0
    (out / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, out / "diffusion_pytorch_model.bin")
    (out / "diffusion_pytorch_model.bin").write_bytes(canary.payload())
    res = call("vfm-generate", ["--checkpoint", out, "--prompt", "a ball", "--out", tmp_path / "v.mp4", *GEN])
    assert_one_line_error(res, 2, "no .safetensors weights")


def test_text_encoder_with_pickle_weights_never_runs(trained_run, tmp_path, canary):
    run = copy_run(trained_run, tmp_path / "run")
    te = run / "text_encoder"
    for p in te.glob("*.safetensors"):
        p.unlink()
    (te / "pytorch_model.bin").write_bytes(canary.payload())
    res = call("vfm-generate", ["--run", run, "--prompt", "a ball", "--out", tmp_path / "v.mp4", *GEN])
    assert_one_line_error(res, 2, "cannot load the text encoder")


@pytest.mark.parametrize("config", [
    '{"num_layers": -3}', '{"num_attention_heads": "many"}', '[1, 2, 3]', '{"patch_size": [1, 2]}',
    '{"num_layers": 1e400}', "not json at all"])
def test_hostile_diffusers_config_is_one_line(trained_run, tmp_path, config):
    out = tmp_path / "export"
    assert call("vfm-train", ["export", "--run", trained_run, "--out", out]).rc == 0
    (out / "vfm" / "config.yaml").unlink()
    (out / "config.json").write_text(config)
    res = call("vfm-generate", ["--checkpoint", out, "--prompt", "a ball", "--out", tmp_path / "v.mp4", *GEN])
    assert_one_line_error(res, 2)


_METADATA_FUZZ = r'''
import os, pickle, pickletools, random, sys, tempfile
from pathlib import Path
from diffusion.safe_dcp import CheckpointError, read_metadata

real = Path(sys.argv[1]).read_bytes()
rng = random.Random(7)
counted = [op + min(n, 256 ** width - 1).to_bytes(width, "little")  # counted opcodes, length past the end
           for op, width in [(b"\x96", 8), (b"\x8e", 8), (b"\x8d", 8), (b"B", 4), (b"X", 4), (b"\x8a", 1), (b"\x8b", 4)]
           for n in (41, 1 << 20, 3 << 30, 1 << 50, 8472487596840486208, (1 << 63) - 1)]
cases = [c + b"x" * 40 for c in counted]
# inside real metadata (where CPython 3.11's C unpickler reliably prints a SystemError on a huge BYTEARRAY8)
starts = [pos for _, _, pos in pickletools.genops(real)]
cases += [real[:at] + c + real[at:] for at in starts[10::max(1, len(starts) // 60)] for c in counted[:6]]  # BYTEARRAY8
cases += [pickle.dumps(bytearray(b"abc"), protocol=5), b"\x80\x05\x97.", b"\x80\x05\x98.", b"(P0\nt."]
cases += [rng.randbytes(rng.randrange(1, 400)) for _ in range(3000)]
for _ in range(1000):  # the real file, truncated or with a few bytes overwritten
    b = bytearray(real[:rng.randrange(len(real))] if rng.random() < 0.3 else real)
    for _ in range(rng.randrange(1, 4)):
        if b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    cases.append(bytes(b))
folder = Path(tempfile.mkdtemp())
refused = 0
for data in cases:
    (folder / ".metadata").write_bytes(data)
    try:
        read_metadata(folder)
    except CheckpointError:
        refused += 1
print(refused, len(cases))
'''


def test_hostile_metadata_bytes_are_refused_silently(trained_run):
    """Random, truncated and mutated metadata: every read either succeeds or raises CheckpointError, and
    nothing reaches stderr (CPython's C unpickler prints a SystemError on a truncated BYTEARRAY8)."""
    import os
    import subprocess
    import sys

    # unbuffered: with a buffered pipe the stray message can be lost at exit
    res = subprocess.run([sys.executable, "-c", _METADATA_FUZZ, str(step_dir(trained_run, 2) / ".metadata")],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert res.returncode == 0 and res.stderr == "", res.stderr[-2000:]
    refused, total = map(int, res.stdout.split())
    assert refused >= total - 1000  # every non-mutated case is refused; a harmless mutation may still read
