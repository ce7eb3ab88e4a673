"""`vfm-train precompute`: VAE latents + text embeddings of curated clips, as latent shards (resumable).

Clips are decoded as the loader would (the config's buckets, fps; centred window) through
`dataload.latents.precompute`, which records finished shards so a rerun skips them. The text encoder
used is kept in LATENTS/text_encoder/ when the config names no path (the tiny random one), so a run
trained on these latents generates with the same encoder.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from diffusion.config import ExperimentConfig
from diffusion.errors import UserError


def precompute(cfg: ExperimentConfig, sources: list[tuple[str, float]], out: Path,
               text_encoder_dir: str | None = None) -> int:
    from dataload.latents import precompute as run_precompute
    from diffusion.text_encoder import TextEncoder, create_tiny_text_encoder
    from diffusion.vae import VideoVAE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    local = out / "text_encoder"
    if text_encoder_dir is not None:
        if not Path(text_encoder_dir).is_dir():
            raise UserError(f"--text-encoder {text_encoder_dir}: no such folder")
        if not local.exists():
            shutil.copytree(text_encoder_dir, local)
        te = TextEncoder.from_pretrained(str(local), replace(cfg.text, path=None))
    elif cfg.text.path is not None:
        te = TextEncoder(cfg.text)
    else:
        if not local.exists():
            tmp = out / "text_encoder.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            create_tiny_text_encoder(str(tmp), dim=cfg.text.dim or cfg.model.text_dim,
                                     max_length=cfg.text.max_length, seed=cfg.train.seed, vocab=cfg.text.vocab)
            tmp.rename(local)
        te = TextEncoder.from_pretrained(str(local), replace(cfg.text, path=None))
    from parallel.device import rank_device

    device = rank_device().device
    te.to(device)
    vae = VideoVAE(cfg.vae).to(device)

    @torch.no_grad()
    def encode(video: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        # the loader gives (B, T, C, H, W) float in [-1, 1]; the VAE takes (B, C, T, H, W)
        latents = vae.encode(video.to(device).float().permute(0, 2, 1, 3, 4).contiguous())
        text, mask = te.encode([c or "" for c in captions])
        return {"latents": latents.cpu(), "text": text.cpu(), "text_mask": mask.cpu()}

    loader_cfg = replace(cfg.data, dtype="float32", start="center")
    try:
        result = run_precompute([p for p, _ in sources], encode, out, config=loader_cfg,
                                progress=sys.stderr.isatty())
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    return result.samples
