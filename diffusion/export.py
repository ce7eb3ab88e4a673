"""`vfm-train export`: a diffusers-format copy of a trained model.

DIR/config.json + DIR/diffusion_pytorch_model.safetensors load with
`diffusers.WanTransformer3DModel.from_pretrained(DIR)`; DIR/vfm/ keeps our config.yaml and the text
encoder so `vfm-generate --checkpoint DIR` can use the folder on its own. Written under DIR.tmp and
renamed when complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diffusion.checkpoint import latest_checkpoint, load_weights
from diffusion.config import load_config, save_config
from diffusion.launch import UserError


def export_run(run: Path, out: Path, prefer_ema: bool = True) -> Path:
    from diffusion.dit import VideoDiT
    from diffusion.dit.convert import save_diffusers

    run, out = Path(run), Path(out)
    if not (run / "config.yaml").is_file():
        raise UserError(f"--run {run}: not a training run (no config.yaml)")
    found = latest_checkpoint(run)
    if found is None:
        raise UserError(f"--run {run}: no checkpoint to export")
    if out.exists():
        raise UserError(f"--out {out} already exists")
    cfg = load_config(str(run / "config.yaml"))
    model = VideoDiT(cfg.model)
    load_weights(found[1], model, prefer_ema=prefer_ema)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_diffusers(model, str(tmp))
    extra = tmp / "vfm"
    extra.mkdir()
    save_config(cfg, extra / "config.yaml")
    if (run / "text_encoder").is_dir():
        shutil.copytree(run / "text_encoder", extra / "text_encoder")
    os.replace(tmp, out)
    return out
