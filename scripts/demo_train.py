"""The training half of the demo: train `tiny` on curated clips (2 ranks, cp=2), generate a video from a
training prompt, and write the report pieces (loss curve PNG, frame strip of the generated video beside a
training clip with that caption, a markdown section).

    python scripts/demo_train.py --curated OUT --work DIR [--steps 300] [--nproc 2] [--cp 2]
    python scripts/demo_train.py --work DIR            # makes a small synthetic curated set first

`scripts/demo.py` calls `run_training_demo(curated, work)` after curating.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def _training_clips(curated: Path, limit: int = 64) -> list[tuple[dict, bytes]]:
    """(clip json, mp4 bytes) of kept clips with a caption, from the curated shards."""
    from dataload.shards import list_shards, read_shard, validate_clip_sample

    shards = curated / "shards" if (curated / "shards").is_dir() else curated
    out = []
    for shard in list_shards(shards):
        for sample in read_shard(shard):
            meta = validate_clip_sample(sample)
            caption = meta.get("caption") or (sample.get("txt") or b"").decode()
            if caption:
                out.append(({**meta, "caption": caption}, sample["mp4"]))
            if len(out) >= limit:
                return out
    return out


def split_holdout(curated: Path, work: Path, holdout: int) -> tuple[Path, Path | None]:
    """Copy the curated clips into train/ and val/ folders (the last `holdout` clips held back)."""
    from dataload.shards import ShardWriter, list_shards, read_shard

    samples = []
    shards = curated / "shards" if (curated / "shards").is_dir() else curated
    for shard in list_shards(shards):
        for sample in read_shard(shard):
            samples.append({k: v for k, v in sample.items() if not k.startswith("__")} | {"__key__": sample["__key__"]})
    if holdout <= 0 or len(samples) < 2 * holdout + 2:
        return curated, None
    out = {}
    for name, part in (("train", samples[:-holdout]), ("val", samples[-holdout:])):
        folder = work / "data" / name
        if not (folder / "dataset.json").is_file():
            (folder / "shards").mkdir(parents=True, exist_ok=True)
            with ShardWriter(folder / "shards", max_samples_per_shard=1000) as w:
                for smp in part:
                    w.write(smp["__key__"], {k: v for k, v in smp.items() if k != "__key__"})
            (folder / "dataset.json").write_text(json.dumps({"kind": "curated", "split_of": str(curated)}))
        out[name] = folder
    return out["train"], out["val"]


def _decode(mp4: bytes, frames: int) -> np.ndarray:
    import av

    with av.open(io.BytesIO(mp4)) as c:
        got = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), c.decode(video=0))]
    return np.stack(got)


def loss_curve(metrics: Path, out_png: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    s, loss = zip(*train)
    ax.plot(s, loss, lw=0.6, alpha=0.45, label="train loss")
    k = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    ax.plot(s[k - 1:], smooth, lw=1.5, label=f"train loss (mean of {k})")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    tmp = out_png.with_name(out_png.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    n = max(1, len(loss) // 10)
    return {"first_10pct": float(np.mean(loss[:n])), "last_10pct": float(np.mean(loss[-n:])),
            "val": val[-1][1] if val else None, "steps": len(loss)}


def frame_strip(generated: np.ndarray, training: np.ndarray, out_png: Path, scale: int = 4) -> None:
    """Two rows: the generated frames over the training clip's frames (same count, nearest upscaling)."""
    from PIL import Image, ImageDraw

    n = min(len(generated), len(training))
    h, w = generated.shape[1:3]
    train_rs = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in training[:n]])
    gap, label = 2, 14
    canvas = np.full((label + 2 * (h + gap) * scale, n * (w + gap) * scale, 3), 255, np.uint8)
    for row, frames in enumerate((generated[:n], train_rs)):
        for i, f in enumerate(frames):
            big = f.repeat(scale, 0).repeat(scale, 1)
            y = label + row * (h + gap) * scale
            x = i * (w + gap) * scale
            canvas[y:y + h * scale, x:x + w * scale] = big
    img = Image.fromarray(canvas)
    ImageDraw.Draw(img).text((2, 1), "top: generated   bottom: training clip", fill=(0, 0, 0))
    tmp = out_png.with_name(out_png.stem + ".tmp.png")
    img.save(tmp)
    tmp.replace(out_png)


def run_training_demo(curated: Path, work: Path, *, steps: int = 300, nproc: int = 2, cp: int = 2,
                      extra_sets: list[str] | None = None) -> dict:
    """Train, generate, report; returns paths and numbers for the demo report. Raises on failure."""
    from diffusion.cli_generate import main as generate_main
    from diffusion.cli_train import main as train_main
    from diffusion.generate import read_video

    curated, work = Path(curated), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    run = work / "run"
    train_data, val_data = split_holdout(curated, work, holdout=2)
    clips = _training_clips(train_data)
    if not clips:
        raise RuntimeError(f"{curated}: no captioned clips to train on")
    prompt_meta, prompt_mp4 = clips[0]
    prompt = prompt_meta["caption"]
    sets = ["--set", "train.val_every=50", "--set", f"train.checkpoint_every={max(1, steps // 2)}",
            "--set", f"train.sample_prompts=[{json.dumps(prompt)}]"]
    for s in extra_sets or []:
        sets += ["--set", s]
    t0 = time.perf_counter()
    resume = ["--resume"] if (run / "config.yaml").is_file() else []
    val = ["--val-data", str(val_data)] if val_data is not None else []
    status = train_main(["fit", "--config", "tiny", "--data", str(train_data), "--out", str(run), "--steps",
                         str(steps), "--nproc", str(nproc), "--cp", str(cp), *val, *sets, *resume]
                        ) if not _finished(run, steps) else 0
    if status != 0:
        raise RuntimeError(f"vfm-train fit failed (exit {status})")
    train_s = time.perf_counter() - t0
    video = work / "generated.mp4"
    t1 = time.perf_counter()
    status = generate_main(["--run", str(run), "--prompt", prompt, "--out", str(video), "--seed", "0",
                            "--nproc", str(nproc), "--cp", str(cp)])
    if status != 0:
        raise RuntimeError(f"vfm-generate failed (exit {status})")
    gen_s = time.perf_counter() - t1
    generated = read_video(video)
    training = _decode(prompt_mp4, len(generated))
    curve = loss_curve(run / "metrics.jsonl", work / "loss_curve.png")
    frame_strip(generated, training, work / "frame_strip.png")
    summary = {"run": str(run), "video": str(video), "prompt": prompt, "training_clip": prompt_meta["clip_id"],
               "loss_curve": str(work / "loss_curve.png"), "frame_strip": str(work / "frame_strip.png"),
               "train_s": round(train_s, 1), "generate_s": round(gen_s, 1), "nproc": nproc, "cp": cp,
               "training_clips": len(clips), "held_back_clips": 0 if val_data is None else 2, **curve}
    (work / "training_summary.json").write_text(json.dumps(summary, indent=1))
    (work / "training.md").write_text(markdown(summary, work))
    return summary


def _finished(run: Path, steps: int) -> bool:
    from diffusion.checkpoint import latest_checkpoint

    found = latest_checkpoint(run) if run.is_dir() else None
    return found is not None and found[0] >= steps


def markdown(s: dict, base: Path) -> str:
    rel = lambda p: Path(p).relative_to(base).as_posix() if Path(p).is_relative_to(base) else p  # noqa: E731
    val = f"{s['val']:.4f}" if s.get("val") is not None else "n/a"
    where = f"{s['held_back_clips']} held-back clips" if s.get("held_back_clips") else "fixed training batches"
    return "\n".join([
        "## Training and generation",
        "",
        f"- `tiny` config trained for {s['steps']} steps on {s['nproc']} ranks with context parallel "
        f"cp={s['cp']} in {s['train_s']:.0f} s; generation in {s['generate_s']:.0f} s.",
        f"- loss, mean of the first 10% of steps: {s['first_10pct']:.4f}; last 10%: {s['last_10pct']:.4f} "
        f"(ratio {s['last_10pct'] / s['first_10pct']:.2f}); last validation loss ({where}): {val}.",
        f"- prompt (a training caption): \"{s['prompt']}\" (clip `{s['training_clip']}`)",
        "",
        f"![loss curve]({rel(s['loss_curve'])})",
        "",
        f"![generated (top) and training clip (bottom)]({rel(s['frame_strip'])})",
        "",
        f"Generated video: `{rel(s['video'])}`",
        "",
    ])


def make_synthetic_curated(out: Path, num_clips: int = 8) -> Path:
    """A small curated folder (shards of captioned synthetic clips) for running this script alone."""
    from dataload.shards import ShardWriter
    from dataload.synthetic import Shot, make_video

    kinds = ["pan", "zoom", "shake", "texture"]
    words = ["drifting", "zooming", "shaking", "still"]
    tmp = out / "_videos"
    tmp.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    with ShardWriter(out / "shards", max_samples_per_shard=4) as w:
        for i in range(num_clips):
            p = tmp / f"clip{i}.mp4"
            truth = make_video(p, [Shot(kinds[i % 4], num_frames=16, seed=i)], width=64, height=64, fps=8, seed=i)
            caption = f"a {words[i % 4]} synthetic pattern number {i % 4}"
            meta = {"clip_id": f"synthetic{i:03d}", "source": str(p), "start_s": 0.0,
                    "end_s": truth.frame_times[-1] + 1 / 8, "start_frame": 0, "end_frame": 16, "num_frames": 16,
                    "fps": 8.0, "width": 64, "height": 64, "caption": caption}
            w.write(meta["clip_id"], {"mp4": p.read_bytes(), "json": json.dumps(meta).encode(),
                                      "txt": caption.encode()})
    (out / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--curated", type=Path, default=None, help="curated OUT (default: make a synthetic one)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the run, video and report pieces")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--cp", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra config override")
    args = ap.parse_args(argv)
    curated = args.curated
    if curated is None:
        curated = args.work / "curated"
        if not (curated / "dataset.json").is_file():
            make_synthetic_curated(curated)
    try:
        summary = run_training_demo(curated, args.work, steps=args.steps, nproc=args.nproc, cp=args.cp,
                                    extra_sets=args.sets)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"demo_train: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def demo_step(ctx: dict) -> None:
    """The `make demo` step (scripts/demo.py): reads ctx["curated"], writes ctx["out"]/train/."""
    work = Path(ctx["out"]) / "train"
    summary = run_training_demo(Path(ctx["curated"]), work, steps=int(ctx.get("train_steps", 300)))
    ctx["training"] = summary
    print(f"training: {summary['steps']} steps on {summary['nproc']} ranks (cp={summary['cp']}) in "
          f"{summary['train_s']:.0f} s; loss {summary['first_10pct']:.3f} -> {summary['last_10pct']:.3f}")
    print(f"generated: {summary['video']} from \"{summary['prompt']}\"")
    print(f"report: {work / 'training.md'} (loss curve {summary['loss_curve']}, frame strip {summary['frame_strip']})")
