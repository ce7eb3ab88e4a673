"""The demo's data split and its report (demo_out/README.md with pictures); used by scripts/demo.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dataload.files import atomic_write_text

# ---------------------------------------------------------------- split

def split_curated(ctx: dict, val_clips: int) -> str:
    """Copy the curated shards into data/train and data/val (the last `val_clips` clips, in clip-id order).

    A clip whose caption is not exactly one caption of the world (two shots a missed cut left joined)
    goes to neither: its caption would teach the model nothing true."""
    from dataload.shapes_world import ShapesWorld
    from dataload.shards import ShardWriter, list_shards, read_shard

    world = ShapesWorld()
    data = ctx["out"] / "data"
    train, val = data / "train", data / "val"
    ctx.update(train_data=train, val_data=val)
    stats_path = data / "split.json"
    if (train / "dataset.json").is_file() and (val / "dataset.json").is_file() and stats_path.is_file():
        ctx["split"] = json.loads(stats_path.read_text())
        return "reused"
    samples, dropped = [], 0
    for shard in list_shards(ctx["curated"] / "shards"):
        for sample in read_shard(shard):
            caption = (sample.get("txt") or b"").decode()
            if world.parse(caption) is None:
                dropped += 1
                continue
            samples.append({k: v for k, v in sample.items() if not k.startswith("__")} | {"__key__": sample["__key__"]})
    samples.sort(key=lambda s: s["__key__"])
    held = [s for s in samples if world.is_heldout(world.parse(s["txt"].decode()))]
    if held:  # the corpus never has them; say so loudly if it ever did
        raise SystemExit(f"demo: {len(held)} curated clips show held-out combinations")
    parts = {"train": samples[:-val_clips], "val": samples[-val_clips:]}
    for name, part in parts.items():
        folder = data / name
        (folder / "shards").mkdir(parents=True, exist_ok=True)
        with ShardWriter(folder / "shards", max_samples_per_shard=1000) as w:
            for smp in part:
                w.write(smp["__key__"], {k: v for k, v in smp.items() if k != "__key__"})
        atomic_write_text(folder / "dataset.json", json.dumps({"kind": "curated", "split_of": str(ctx["curated"])}))
    stats = {"train": len(parts["train"]), "val": len(parts["val"]), "dropped_captions": dropped}
    atomic_write_text(stats_path, json.dumps(stats))
    ctx["split"] = stats
    print(f"split: {stats['train']} training clips, {stats['val']} validation clips"
          + (f", {dropped} left out (caption spans two shots)" if dropped else ""))
    return "made"


# ---------------------------------------------------------------- pictures

def loss_curve(metrics: Path, out_png: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    s, loss = (np.array(x) for x in zip(*train))
    ax.plot(s, loss, lw=0.5, alpha=0.35, color="C0", label="training loss")
    k = max(1, len(loss) // 25)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    ax.plot(s[k - 1:], smooth, lw=1.6, color="C0", label=f"training loss (mean of {k} steps)")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, color="C1", label="validation loss (held-back clips)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    n = max(1, len(loss) // 10)
    timing = [r for r in rows if "tokens_per_s" in r]
    return {"first_10pct": float(np.mean(loss[:n])), "last_10pct": float(np.mean(loss[-n:])),
            "val_first": val[0][1] if val else None, "val_last": val[-1][1] if val else None,
            "steps": int(s[-1]), "train_s": float(sum(r.get("step_time_s", 0) + r.get("data_time_s", 0) for r in rows)),
            "tokens_per_s": float(np.median([r["tokens_per_s"] for r in timing])) if timing else None}


def strips(ctx: dict, out_png: Path, per_split: int = 4) -> list[dict]:
    """Generated videos of a few prompts (held out first) over a ground-truth video of the same prompt."""
    from dataload.shapes_world import ShapesWorld
    from diffusion.evaluate.figures import strip_grid
    from diffusion.generate import read_video

    world = ShapesWorld()
    records = [json.loads(x) for x in (ctx["eval"] / "results.jsonl").read_text().splitlines()]
    chosen = []
    for heldout in (True, False):
        seen_pairs = set()
        for r in records:
            pair = (r["expected"]["color"], r["expected"]["direction"])
            if r["heldout"] == heldout and r["seed"] == 0 and pair not in seen_pairs and len(seen_pairs) < per_split:
                seen_pairs.add(pair)
                chosen.append(r)
    rows = []
    for k, r in enumerate(chosen):
        frames = read_video(ctx["eval"] / r["video"])
        scene = world.parse(r["prompt"])
        truth, _ = world.render(scene, seed=1000 + k, frames=len(frames))
        m, e = r["measured"], r["expected"]
        rows.append({"label": ("[held out] " if r["heldout"] else "[seen] ") + r["prompt"],
                     "frames": frames, "reference": truth,
                     "marks": [("colour", m["color"] == e["color"]), ("shape", m["shape"] == e["shape"]),
                               ("direction", m["direction"] == e["direction"])]})
    strip_grid(rows, out_png, scale=2, title="top: generated (seed 0)   bottom: a ground-truth video of the prompt")
    return chosen


# ---------------------------------------------------------------- README

def write_report(ctx: dict) -> None:
    import pyarrow.parquet as pq

    from dataload.shapes_world import ShapesWorld
    from diffusion.config import load_config

    out: Path = ctx["out"]
    fig = out / "figures"
    fig.mkdir(exist_ok=True)
    world = ShapesWorld()
    cfg = load_config(str(ctx["run"] / "config.yaml"))
    curve = loss_curve(ctx["run"] / "metrics.jsonl", fig / "training_curve.png")
    chosen = strips(ctx, fig / "generated_strips.png")
    summary = json.loads((ctx["eval"] / "summary.json").read_text())
    table = (ctx["eval"] / "table.md").read_text()
    clips = pq.read_table(ctx["curated"] / "clips.parquet").to_pylist()
    kept = sum(c["status"] == "kept" for c in clips)
    reasons: dict[str, int] = {}
    for c in clips:
        if c["reject_reason"]:
            reasons[c["reject_reason"]] = reasons.get(c["reject_reason"], 0) + 1
    shots = ctx["corpus"]["shots"]
    n_videos = len({s["video"] for s in shots})
    params = _parameters(cfg)
    f, h, w = cfg.data.buckets[0][-3] if len(cfg.data.buckets[0]) == 3 else cfg.data.num_frames, *cfg.data.buckets[0][-2:]
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    timing_rows = []
    for name, t in ctx["timings"].items():
        note = {"made": "did the work now", "resumed": "continued earlier work",
                "reused": "reused earlier work" + (f" (made in {t['made_in_s']:.0f} s)" if t.get("made_in_s") else "")}
        timing_rows.append(f"| {name} | {t['seconds']:.0f} s | {note[t['what']]} |")
    this_run = sum(t["seconds"] for t in ctx["timings"].values())
    made = sum((t["made_in_s"] or 0) for t in ctx["timings"].values())
    held_pairs = ", ".join(f"{c} moving {d}" for c, d in world.heldout)
    split = ctx.get("split", {})
    lines = [
        "# The demo: a text-to-video model of the shapes world, trained and measured on this machine",
        "",
        f"A `{cfg.name}` VideoDiT ({params / 1e6:.2f} M parameters) was trained for {curve['steps']} steps on "
        f"{ctx.get('nproc', 2)} ranks with context parallelism (cp={ctx.get('cp', 2)}) on curated clips of the "
        f"shapes world, then asked for {summary['num_videos']} videos ({w}x{h} pixels, {f} frames). On the "
        f"**held-out** colour-direction combinations, never shown in training, the analyser reads the asked "
        f"colour in **{summary['heldout_color_accuracy']:.0%}** and the asked direction in "
        f"**{summary['heldout_direction_accuracy']:.0%}** of the videos (chance: "
        f"{summary['chance']['color']:.0%} and {summary['chance']['direction']:.0%}).",
        "",
        "## What ran",
        "",
        "| step | time | |",
        "|---|---:|---|",
        *timing_rows,
        "",
        f"This run: {this_run:.0f} s of steps; the work itself, counting steps reused from earlier runs: "
        f"{made:.0f} s.",
        "",
        "## The world",
        "",
        f"One object: a {_join(world.colors)} {_join(world.shapes, 'or')} moving {_join(world.directions, 'or')} "
        f"on a {_join(world.backgrounds, 'or')} background, {world.width}x{world.height} pixels at "
        f"{world.fps:g} fps, captioned like \"{world.caption(world.scenes('train')[0])}\". Held out of every "
        f"training clip: {held_pairs} (each colour and each direction is still seen with the others). The "
        f"corpus: {n_videos} videos of {len(shots)} shots ({ctx['corpus']['repeats']} of each of the "
        f"{len(world.scenes('train'))} training combinations), shots joined by two frames of static, an .srt "
        "cue per shot.",
        "",
        "## Curation",
        "",
        f"`vfm-curate run` found the shots, filtered and captioned them from the .srt: {kept} clips kept of "
        f"{len(clips)}" + (f"; rejected: {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}" if reasons
                           else "") + f". Training used {split.get('train', '?')} clips, validation "
        f"{split.get('val', '?')} held-back clips" + (f"; {split['dropped_captions']} clips whose caption "
                                                       "spans two shots were left out" if split.get("dropped_captions")
                                                       else "") + f". Report: [{rel(ctx['curated'] / 'report.md')}]"
        f"({rel(ctx['curated'] / 'report.md')}).",
        "",
        "## Training",
        "",
        f"`vfm-train fit --config {cfg.name} --nproc 2 --cp 2`: {curve['steps']} steps of {cfg.data.batch_size} clips, "
        f"{curve['train_s']:.0f} s of steps, {curve['tokens_per_s'] or 0:.0f} tokens/s (median). Loss "
        f"{curve['first_10pct']:.3f} (first 10% of steps) -> {curve['last_10pct']:.3f} (last 10%)"
        + (f"; validation {curve['val_first']:.3f} -> {curve['val_last']:.3f}" if curve["val_first"] else "") + ".",
        "",
        f"![training curve]({rel(fig / 'training_curve.png')})",
        "",
        f"Watch it live: `tensorboard --logdir {rel(ctx['run'] / 'tb')}` (loss, learning rate, gradient norm, "
        "throughput, validation loss, sample strips).",
        "",
        "## Generated videos",
        "",
        f"![generated videos over ground truth]({rel(fig / 'generated_strips.png')})",
        "",
        f"`vfm-generate` on 2 context-parallel ranks, \"{ctx['generated_prompt']}\" (held out): "
        f"[{rel(ctx['generated'])}]({rel(ctx['generated'])}).",
        "",
        "## Evaluation",
        "",
        f"`vfm-train eval` generated every prompt of the shapes suite ({summary['num_prompts']} prompts, "
        f"{summary['num_videos']} videos) and measured each with the analyser (segmentation against the "
        "background, nearest named colour, shape by extent, direction from the centroid track):",
        "",
        table,
        f"All videos: [{rel(ctx['eval'] / 'grid.png')}]({rel(ctx['eval'] / 'grid.png')}); per video: "
        f"[{rel(ctx['eval'] / 'results.jsonl')}]({rel(ctx['eval'] / 'results.jsonl')}).",
        "",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines))
    ctx["report"] = {"curve": curve, "summary": summary, "strips": [r["prompt"] for r in chosen]}


def _join(names, last: str = "or") -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" {last} {names[-1]}"


def _parameters(cfg) -> int:
    import torch

    from diffusion.dit import VideoDiT

    with torch.device("meta"):
        return sum(p.numel() for p in VideoDiT(cfg.model).parameters())
