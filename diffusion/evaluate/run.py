"""`vfm-train eval`: generate every prompt of a suite with a trained run and measure prompt following.

Each (prompt, seed) video starts from the same seeded noise as `vfm-generate --seed S` would (prompts are
batched, noise is drawn per seed), is decoded and measured by `analyse.analyse_video`. Accuracy per
attribute is reported for the prompts seen in training, the held-out combinations and all together.

OUT (default RUN/eval):
  videos/NNN.mp4    every generated video (H.264)
  results.jsonl     per video: prompt, seed, held out, expected and measured attributes
  summary.json      the accuracies (the object `--json` prints last)
  table.md          the accuracy table in markdown
  grid.png          the videos as frame strips beside their prompts, with a mark per attribute
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from dataload.shapes_world import ShapesWorld
from diffusion.errors import UserError
from diffusion.evaluate.suite import EvalPrompt, load_prompts, shapes_suite

ATTRIBUTES = ("color", "shape", "direction")


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="video", disable=None, leave=False)  # quiet unless a terminal


def generate_videos(loaded, items: list[tuple[str, int]], *, steps: int | None = None,
                    guidance: float | None = None, batch_size: int = 8, progress=None) -> list[np.ndarray]:
    """(T, H, W, 3) uint8 frames for each (prompt, seed), in order; one process, prompts batched."""
    import torch

    from diffusion.generate import default_video_size, to_uint8_frames
    from diffusion.sampling import initial_noise, sample

    cfg = loaded.cfg
    f, h, w = default_video_size(cfg)
    shape = (1, *loaded.vae.latent_shape(f, h, w))
    overrides = {k: v for k, v in dict(steps=steps, guidance=guidance).items() if v is not None}
    scfg = replace(cfg.sampler, **overrides)
    out = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            text, mask = loaded.text_encoder.encode([p for p, _ in chunk])
            neg, neg_mask = loaded.text_encoder.encode([""] * len(chunk))
            noise = torch.cat([initial_noise(shape, None, seed) for _, seed in chunk])
            latents = sample(loaded.model, noise.shape, text, mask, neg, neg_mask, config=scfg, latents=noise)
            video = loaded.vae.decode(latents)
            out += [to_uint8_frames(v) for v in video]
            if progress is not None:
                progress.update(len(chunk))
    return out


def accuracy_table(summary: dict) -> str:
    rows = [("seen in training", "seen"), ("held-out combinations", "heldout"), ("all", "all")]
    out = ["| prompts | videos | colour | shape | direction | object found | flicker |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for label, key in rows:
        g = summary["groups"][key]
        if not g["videos"]:
            continue
        out.append(f"| {label} | {g['videos']} | {g['color']:.2f} | {g['shape']:.2f} | {g['direction']:.2f} | "
                   f"{g['found']:.2f} | {g['flicker']:.1f} |")
    c = summary["chance"]
    out.append(f"| chance | | {c['color']:.2f} | {c['shape']:.2f} | {c['direction']:.2f} | | |")
    return "\n".join(out) + "\n"


def summarise(records: list[dict], world: ShapesWorld) -> dict:
    def group(rs: list[dict]) -> dict:
        n = len(rs)
        g = {"videos": n}
        for a in ATTRIBUTES:
            g[a] = sum(r["measured"][a] == r["expected"][a] for r in rs) / n if n else 0.0
        g["found"] = sum(r["measured"]["found"] for r in rs) / n if n else 0.0
        g["flicker"] = float(np.mean([r["measured"]["flicker"] for r in rs])) if n else 0.0
        return g

    groups = {"seen": group([r for r in records if not r["heldout"]]),
              "heldout": group([r for r in records if r["heldout"]]), "all": group(records)}
    out = {f"{a}_accuracy": round(groups["all"][a], 4) for a in ATTRIBUTES}
    for key in ("seen", "heldout"):
        out.update({f"{key}_{a}_accuracy": round(groups[key][a], 4) for a in ATTRIBUTES})
    out.update(num_videos=len(records), num_heldout_videos=groups["heldout"]["videos"],
               num_prompts=len({r["prompt"] for r in records}), found_rate=round(groups["all"]["found"], 4),
               flicker=round(groups["all"]["flicker"], 3),
               chance={"color": 1 / len(world.colors), "shape": 1 / len(world.shapes),
                       "direction": 1 / len(world.directions)},
               groups=groups)
    return out


def evaluate_run(run: str | Path, *, suite: str = "shapes", prompts_file: str | Path | None = None,
                 out: str | Path | None = None, seeds: int = 2, steps: int | None = None,
                 guidance: float | None = None, world: ShapesWorld | None = None, log=print) -> dict:
    """Generate, measure, write OUT; returns the summary (what summary.json holds)."""
    from diffusion.evaluate.analyse import analyse_video
    from diffusion.evaluate.figures import strip_grid
    from diffusion.generate import load_run, write_video

    world = world or ShapesWorld()
    if suite != "shapes":
        raise UserError(f"--suite {suite}: unknown suite (known: shapes)")
    prompts: list[EvalPrompt] = load_prompts(prompts_file, world, seeds) if prompts_file else shapes_suite(world, seeds)
    run = Path(run)
    out = Path(out) if out is not None else run / "eval"
    t0 = time.perf_counter()
    loaded = load_run(run)
    items = [(p, s) for p in prompts for s in p.seeds]
    bar = _progress(len(items), "eval")
    try:
        videos = generate_videos(loaded, [(p.prompt, s) for p, s in items], steps=steps, guidance=guidance,
                                 progress=bar)
    finally:
        bar.close()
    gen_s = time.perf_counter() - t0
    (out / "videos").mkdir(parents=True, exist_ok=True)
    fps = float(loaded.cfg.data.fps or 8.0)
    records, rows = [], []
    for k, ((p, seed), frames) in enumerate(zip(items, videos)):
        a = analyse_video(frames, world)
        measured = a.to_dict()
        expected = {"color": p.scene.color, "shape": p.scene.shape, "direction": p.scene.direction,
                    "background": p.scene.background}
        video = out / "videos" / f"{k:03d}.mp4"
        write_video(frames, video, fps=fps)
        records.append({"index": k, "prompt": p.prompt, "seed": seed, "heldout": p.heldout,
                        "video": video.relative_to(out).as_posix(), "expected": expected, "measured": measured})
        marks = [(name, measured[a_] == expected[a_]) for name, a_ in
                 (("colour", "color"), ("shape", "shape"), ("direction", "direction"))]
        label = f"{'[held out] ' if p.heldout else ''}{p.prompt} (seed {seed})"
        rows.append({"label": label, "frames": frames, "marks": marks})
    summary = summarise(records, world)
    summary.update(run=str(run), weights=loaded.weights, out=str(out), generate_s=round(gen_s, 2),
                   seconds=round(time.perf_counter() - t0, 2), video_shape=list(videos[0].shape) if videos else None,
                   sampler={"name": loaded.cfg.sampler.name, "steps": steps or loaded.cfg.sampler.steps,
                            "guidance": guidance if guidance is not None else loaded.cfg.sampler.guidance})
    _write(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    _write(out / "table.md", accuracy_table(summary))
    strip_grid(rows, out / "grid.png", title=f"{run.name}: {loaded.weights}")
    _write(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _write(path: Path, text: str) -> None:
    from dataload.files import atomic_write_text

    atomic_write_text(path, text)


def run_eval(args) -> int:
    """The `vfm-train eval` command body (diffusion.cli_train registers it)."""
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not Path(args.run).is_dir():
        raise UserError(f"--run {args.run}: no such folder")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise UserError(f"--prompts {args.prompts}: no such file")
    summary = evaluate_run(args.run, suite=args.suite, prompts_file=args.prompts, out=args.out, seeds=args.seeds,
                           steps=args.steps, guidance=args.guidance)
    print(accuracy_table(summary), end="")
    print(f"vfm-train eval: {summary['num_videos']} videos in {summary['seconds']:.0f} s; "
          f"grid, table and videos in {summary['out']}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "groups"}))
    return 0

