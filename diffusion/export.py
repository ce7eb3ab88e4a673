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

from diffusion.checkpoint import load_weights
from diffusion.config import load_config, save_config
from diffusion.errors import UserError


def export_run(run: Path, out: Path, prefer_ema: bool = True, warn=None) -> Path:
    from diffusion.checkpoint import usable_checkpoints
    from diffusion.dit import VideoDiT

    run, out = Path(run), Path(out)
    if not (run / "config.yaml").is_file():
        raise UserError(f"--run {run}: not a training run (no config.yaml)")
    good, damaged = usable_checkpoints(run)
    if not good:
        why = f" ({damaged[0][1]})" if damaged else ""
        raise UserError(f"--run {run}: no complete checkpoint to export{why}")
    found = good[0]
    for step, why in damaged:
        if warn is not None and step > found[0]:
            warn(f"{why}; exporting {found[1].name}")
    if out.exists():
        raise UserError(f"--out {out} already exists")
    cfg = load_config(str(run / "config.yaml"))
    model = VideoDiT(cfg.model)
    load_weights(found[1], model, prefer_ema=prefer_ema)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(model, cfg, run, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or an interrupt leaves nothing behind
        raise
    os.replace(tmp, out)
    return out


def _write(model, cfg, run: Path, tmp: Path) -> None:
    from diffusion.dit.convert import save_diffusers

    save_diffusers(model, str(tmp))
    extra = tmp / "vfm"
    extra.mkdir()
    save_config(cfg, extra / "config.yaml")
    if (run / "text_encoder").is_dir():
        shutil.copytree(run / "text_encoder", extra / "text_encoder")
