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
    if cfg.model.prediction != "velocity" or cfg.model.pooled_text or cfg.model.abs_pos_embed:
        # diffusers' Wan pipelines read the output as a velocity and have no pooled-text projection
        # and no absolute position embedding
        raise UserError(f"--run {run}: the model is not a plain Wan transformer (model.prediction="
                        f"{cfg.model.prediction}, model.pooled_text={cfg.model.pooled_text}, model.abs_pos_embed="
                        f"{cfg.model.abs_pos_embed}); diffusers' Wan format holds velocity models without "
                        "pooled text or absolute positions only")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if cfg.train.lora.enabled:
        writer = _lora_writer(found[1], cfg, prefer_ema)
    else:
        model = VideoDiT(cfg.model)
        load_weights(found[1], model, prefer_ema=prefer_ema)

        def writer(folder: Path) -> None:
            _write(model, cfg, run, folder)
    try:
        writer(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or an interrupt leaves nothing behind
        raise
    os.replace(tmp, out)
    return out


def _lora_writer(ckpt: Path, cfg, prefer_ema: bool):
    """A LoRA run exports its adapters only: DIR/pytorch_lora_weights.safetensors, which diffusers' Wan
    pipelines load with `load_lora_weights` (the base is whatever the run started from)."""
    from diffusion.checkpoint import load_checkpoint_tensors
    from diffusion.lora import is_adapter, normalize_names, save_diffusers_lora

    adapters, _ = load_checkpoint_tensors(ckpt, is_adapter, prefer_ema=prefer_ema)
    if not adapters:
        raise UserError(f"{ckpt}: holds no LoRA adapters")
    lora = cfg.train.lora

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        save_diffusers_lora({k: v.float() for k, v in normalize_names(adapters).items()}, lora.rank, lora.scale,
                            folder, lora.targets)
    return write


def _write(model, cfg, run: Path, tmp: Path) -> None:
    from diffusion.dit.convert import save_diffusers

    save_diffusers(model, str(tmp))
    extra = tmp / "vfm"
    extra.mkdir()
    save_config(cfg, extra / "config.yaml")
    if (run / "text_encoder").is_dir():
        shutil.copytree(run / "text_encoder", extra / "text_encoder")
