"""`vfm-generate`: text to video with a trained model, optionally context-parallel over local ranks."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from diffusion.errors import UserError, run_command
from diffusion.launch import launch, quiet_progress_unless_tty


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vfm-generate", description=(
        "Generate a video from a text prompt. --run takes RUN's latest checkpoint (EMA weights when "
        "present); --checkpoint takes one checkpoint folder, a `vfm-train export` folder or a diffusers "
        "Wan pipeline folder. Output: H.264 mp4, or with --out FILE.npy the exact uint8 frames (T, H, W, 3)."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="training run folder")
    src.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder or diffusers-format Wan folder")
    p.add_argument("--prompt", required=True,
                   help="what the video shows (must not be empty: unconditional generation is not offered)")
    p.add_argument("--negative-prompt", default="", help="what guidance steers away from (default: empty)")
    p.add_argument("--out", required=True, metavar="FILE.mp4",
                   help="output video: .mp4 (H.264), or .npy for the uint8 frames before any encoding")
    p.add_argument("--frames", type=int, default=None, help="video frames (default: the training clip length)")
    p.add_argument("--height", type=int, default=None, help="default: the first training bucket")
    p.add_argument("--width", type=int, default=None, help="default: the first training bucket")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--sampler", choices=["euler", "unipc"], default=None, help="default: the config's")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: the config's)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the mp4 (default: the training fps)")
    p.add_argument("--nproc", type=int, default=1, help="local ranks to spawn (default 1)")
    p.add_argument("--cp", type=int, default=None, help="context-parallel degree (default: --nproc / --tp)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1); --nproc = cp x tp")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.add_argument("--lora", default=None, metavar="PATH",
                   help="merge LoRA adapters: a diffusers-format pytorch_lora_weights.safetensors (or its "
                        "folder), or a LoRA run of ours (or one of its checkpoints)")
    p.add_argument("--lora-scale", type=float, default=1.0, metavar="S", help="adapter strength (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_progress_unless_tty()
    return run_command("vfm-generate", lambda: _generate(args))


def _generate(args) -> int:
    from diffusion.generate import GeneratePlan, generate_rank

    if args.nproc < 1 or args.tp < 1 or (args.cp is not None and args.cp < 1):
        raise UserError("--nproc, --cp and --tp must be positive")
    cp = args.cp if args.cp is not None else max(1, args.nproc // args.tp)
    if cp * args.tp != args.nproc:
        raise UserError(f"--nproc {args.nproc} must equal --cp x --tp = {cp} x {args.tp}")
    from diffusion.cli_train import check_rank_count

    check_rank_count(args.nproc)
    if not args.prompt.strip():
        raise UserError("--prompt is empty; describe the video to generate")
    out = Path(args.out)
    if not args.out.lower().endswith((".mp4", ".npy")):
        raise UserError(f"--out {args.out}: must end in .mp4 (a video) or .npy (the raw frames)")
    if out.is_dir():
        raise UserError(f"--out {args.out} is a folder")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {args.out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UserError(f"--out {args.out}: the folder {out.parent} does not exist")
    for name in ("frames", "height", "width", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name} must be >= 1, got {v}")
    for name in ("guidance", "fps"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v >= 0 and (name != "fps" or v > 0)):
            raise UserError(f"--{name} must be a finite number {'> 0' if name == 'fps' else '>= 0'}, got {v}")
    if not math.isfinite(args.lora_scale):
        raise UserError(f"--lora-scale must be a finite number, got {args.lora_scale}")
    if args.lora is not None and not Path(args.lora).exists():
        raise UserError(f"--lora {args.lora}: no such file or folder")
    if args.seed is not None and not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [0, 2^63), got {args.seed}")
    src = Path(args.run or args.checkpoint)
    if not src.exists():
        raise UserError(f"{'--run' if args.run else '--checkpoint'} {src}: no such folder")
    checkpoint = _choose_checkpoint(args)
    _check_size(checkpoint, args)
    plan = GeneratePlan(run=None, checkpoint=str(checkpoint), prompt=args.prompt,
                        negative_prompt=args.negative_prompt, out=str(out.resolve()),
                        frames=args.frames, height=args.height, width=args.width, steps=args.steps,
                        guidance=args.guidance, sampler=args.sampler, seed=args.seed, fps=args.fps, cp=cp,
                        tp=args.tp, lora=args.lora, lora_scale=args.lora_scale)
    launch(generate_rank, args.nproc, {"plan": plan}, verbose_errors=bool(os.environ.get("VFM_DEBUG")))
    print(f"vfm-generate: wrote {args.out}", file=sys.stderr)
    return 0


def _choose_checkpoint(args) -> Path:
    """The folder to load: --checkpoint as given, or RUN's newest complete checkpoint."""
    from diffusion.generate import run_checkpoint

    if args.checkpoint:
        return Path(args.checkpoint)
    return run_checkpoint(Path(args.run), warn=lambda line: print(f"vfm-generate: warning: {line}", file=sys.stderr))


def _check_size(checkpoint: Path, args) -> None:
    """The requested size fits the model's VAE, positions and this machine's memory (before allocating)."""
    import torch

    from diffusion.config import check_video_size, vae_factors
    from diffusion.generate import default_video_size, source_config
    from diffusion.memory import available_bytes, describe, generation_bytes

    cfg = source_config(checkpoint)
    f0, h0, w0 = default_video_size(cfg)
    frames, height, width = args.frames or f0, args.height or h0, args.width or w0
    check_video_size(cfg, frames, height, width, "--frames/--height/--width")
    ft, fs = vae_factors(cfg)
    latent = (cfg.model.in_channels, (frames - 1) // ft + 1 if ft > 1 else frames, height // fs, width // fs)
    need = generation_bytes(cfg.model, latent, (frames, height, width), cfg.text.max_length)
    from parallel.device import use_cuda

    if use_cuda():
        have = torch.cuda.mem_get_info()[0]
    else:
        have = available_bytes()
    if need > have:
        raise UserError(f"generating {frames}x{height}x{width} needs about {describe(need)}; {describe(have)} is "
                        "available (use a smaller --frames/--height/--width)")


if __name__ == "__main__":
    sys.exit(main())
