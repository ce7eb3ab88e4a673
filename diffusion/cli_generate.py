"""`vfm-generate`: text to video with a trained model, optionally context-parallel over local ranks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from diffusion.launch import UserError, launch, quiet_progress_unless_tty


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vfm-generate", description=(
        "Generate a video from a text prompt. --run takes RUN's latest checkpoint (EMA weights when "
        "present); --checkpoint takes one checkpoint folder, a `vfm-train export` folder or a diffusers "
        "Wan pipeline folder. Output: H.264 mp4."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="training run folder")
    src.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder or diffusers-format Wan folder")
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("--negative-prompt", default="", help="what guidance steers away from (default: empty)")
    p.add_argument("--out", required=True, metavar="FILE.mp4", help="output video")
    p.add_argument("--frames", type=int, default=None, help="video frames (default: the training clip length)")
    p.add_argument("--height", type=int, default=None, help="default: the first training bucket")
    p.add_argument("--width", type=int, default=None, help="default: the first training bucket")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--sampler", choices=["euler", "unipc"], default=None, help="default: the config's")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: the config's)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the mp4 (default: the training fps)")
    p.add_argument("--nproc", type=int, default=1, help="local ranks to spawn (default 1)")
    p.add_argument("--cp", type=int, default=None, help="context-parallel degree (must equal --nproc)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_progress_unless_tty()
    from diffusion.config import ConfigError
    from diffusion.generate import GeneratePlan, generate_rank

    try:
        cp = args.cp if args.cp is not None else args.nproc
        if args.nproc < 1 or cp != args.nproc:
            raise UserError(f"--nproc {args.nproc} must equal --cp {cp} (generation is context parallel only)")
        if not args.out.lower().endswith(".mp4"):
            raise UserError(f"--out {args.out}: must end in .mp4")
        for name in ("frames", "height", "width", "steps"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise UserError(f"--{name} must be >= 1, got {v}")
        src = Path(args.run or args.checkpoint)
        if not src.exists():
            raise UserError(f"{'--run' if args.run else '--checkpoint'} {src}: no such folder")
        plan = GeneratePlan(run=args.run, checkpoint=args.checkpoint, prompt=args.prompt,
                            negative_prompt=args.negative_prompt, out=str(Path(args.out).resolve()),
                            frames=args.frames, height=args.height, width=args.width, steps=args.steps,
                            guidance=args.guidance, sampler=args.sampler, seed=args.seed, fps=args.fps, cp=cp)
        launch(generate_rank, args.nproc, {"plan": plan}, verbose_errors=bool(os.environ.get("VFM_DEBUG")))
        print(f"vfm-generate: wrote {args.out}", file=sys.stderr)
        return 0
    except (UserError, ConfigError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"vfm-generate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vfm-generate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("VFM_DEBUG"):
            raise
        print(f"vfm-generate: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
