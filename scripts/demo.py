"""`make demo`: the main job end to end on the shapes world, measured.

    python scripts/demo.py [--out demo_out] [--workers N] [--fresh]

1. corpus    seeded videos of the shapes world (dataload.shapes_world) with .srt captions; the held-out
             (colour, direction) pairs never appear in them
2. curate    `vfm-curate run` on them: shot detection, filters, timed-text captions, shards, report
3. split     the curated clips into train/ and a few held-back val/ clips (validation loss)
4. train     `vfm-train fit --config demo` on 2 ranks with context parallelism (--nproc 2 --cp 2)
5. generate  `vfm-generate` of a held-out prompt on 2 context-parallel ranks
6. evaluate  `vfm-train eval`: every prompt of the shapes suite, measured by the video analyser
7. report    demo_out/README.md: the training curve, frame strips beside their prompts, the table

The demo is the list STEPS; each step takes and extends one shared dict. A rerun over an existing
demo_out reuses what is complete (curation resumes, a finished run is not retrained) and its README
says which steps did work now and which were reused, with the time each took when it was made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "scripts"):  # run as a script from anywhere, or loaded by the demo benchmark
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

CONFIG = "demo"  # the preset of diffusion/config.py that this demo trains
NPROC, CP = 2, 2
REPEATS = 2  # shots of every training combination (the world's paths are fixed, so repeats add epochs, not variety)
VAL_CLIPS = 16  # curated clips held back for the validation loss (seen combinations, never trained on)


def _exe(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    module = {"vfm-curate": "curate.cli", "vfm-train": "diffusion.cli_train", "vfm-generate": "diffusion.cli_generate"}
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", module[name]]


def _run(ctx: dict, name: str, args: list[str], ok=(0,)) -> None:
    import subprocess

    cmd = _exe(name) + args
    shown = " ".join([name, *(a if " " not in a else json.dumps(a) for a in args)])
    print(f"$ {shown.replace(str(ctx['out']), ctx['out'].name)}", flush=True)
    status = subprocess.run(cmd, cwd=ROOT).returncode
    if status not in ok:
        raise SystemExit(f"demo: {name} failed with exit status {status}")


# ---------------------------------------------------------------- steps

def corpus(ctx: dict) -> str:
    """The shapes-world corpus: every training combination REPEATS times, 8 shots a video."""
    from dataload.shapes_world import ShapesWorld, write_corpus

    videos = ctx["out"] / "videos"
    existed = (videos / "corpus.json").is_file()
    manifest = write_corpus(videos, ShapesWorld(), repeats=REPEATS)
    ctx.update(videos=videos, corpus=manifest)
    n = len({s["video"] for s in manifest["shots"]})
    print(f"corpus: {n} videos, {len(manifest['shots'])} captioned shots in {videos}")
    return "reused" if existed else "made"


def curate(ctx: dict) -> str:
    """`vfm-curate run` (a rerun resumes: finished sources are not redone)."""
    out = ctx["out"] / "curated"
    existed = (out / "clips.parquet").is_file()
    # the world's black backgrounds with one small object average ~0.06 luma, under the default `dark`
    # threshold (0.08) meant for black frames: without this a third of the combinations would be dropped
    _run(ctx, "vfm-curate", ["run", str(ctx["videos"]), "--out", str(out), "--workers", str(ctx["workers"]),
                             "--set", "filters.min_brightness=0.03"], ok=(0, 3))
    ctx["curated"] = out
    return "resumed" if existed else "made"


def split(ctx: dict) -> str:
    """train/ and val/ shard folders from the curated shards (clips whose caption is not one world
    caption, e.g. two shots a missed cut joined, are left out and counted)."""
    from demo_report import split_curated  # scripts/demo_report.py

    return split_curated(ctx, VAL_CLIPS)


def train(ctx: dict) -> str:
    """`vfm-train fit --config demo` on 2 ranks, context parallel; a finished run is kept."""
    from diffusion.checkpoint import latest_checkpoint
    from diffusion.config import load_config

    run = ctx["out"] / "run"
    ctx["run"] = run
    steps = load_config(CONFIG).train.steps
    found = latest_checkpoint(run) if (run / "config.yaml").is_file() else None
    if found is not None and found[0] >= steps:
        return "reused"
    resume = ["--resume"] if found is not None else []
    _run(ctx, "vfm-train", ["fit", "--config", CONFIG, "--data", str(ctx["train_data"]), "--val-data",
                            str(ctx["val_data"]), "--out", str(run), "--nproc", str(NPROC), "--cp", str(CP),
                            *resume])
    return "resumed" if resume else "made"


def generate(ctx: dict) -> str:
    """`vfm-generate` of the first held-out prompt on 2 context-parallel ranks."""
    from dataload.shapes_world import ShapesWorld
    from diffusion.evaluate.suite import shapes_suite

    prompt = next(p for p in shapes_suite(ShapesWorld()) if p.heldout).prompt
    video = ctx["out"] / "generated" / "heldout.mp4"
    ctx.update(generated=video, generated_prompt=prompt)
    if video.is_file() and video.stat().st_mtime >= _checkpoint_mtime(ctx["run"]):
        return "reused"
    video.parent.mkdir(exist_ok=True)
    _run(ctx, "vfm-generate", ["--run", str(ctx["run"]), "--prompt", prompt, "--out", str(video), "--seed", "0",
                               "--nproc", str(NPROC), "--cp", str(CP), "--overwrite"])
    return "made"


def evaluate(ctx: dict) -> str:
    """`vfm-train eval` with the shapes suite (seen and held-out prompts, 2 seeds each)."""
    out = ctx["out"] / "eval"
    ctx["eval"] = out
    summary = out / "summary.json"
    if summary.is_file() and summary.stat().st_mtime >= _checkpoint_mtime(ctx["run"]):
        return "reused"
    _run(ctx, "vfm-train", ["eval", "--run", str(ctx["run"]), "--out", str(out), "--json"])
    return "made"


def report(ctx: dict) -> str:
    """demo_out/README.md with the pictures."""
    from demo_report import write_report  # scripts/demo_report.py

    write_report(ctx)
    print(f"report: {ctx['out'] / 'README.md'}")
    return "made"


def _checkpoint_mtime(run: Path) -> float:
    from diffusion.checkpoint import latest_checkpoint

    found = latest_checkpoint(run)
    return found[1].stat().st_mtime if found else float("inf")


STEPS = [corpus, curate, split, train, generate, evaluate, report]


# ---------------------------------------------------------------- driver

def run_demo(out: Path, workers: int, steps=None) -> dict:
    """Run the steps in order into `out`; returns the shared dict (with per-step timings)."""
    from dataload.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    earlier = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    ctx = {"out": out, "workers": workers, "timings": {}, "earlier": earlier, "started": time.time()}
    for step in steps or STEPS:
        print(f"== {step.__name__}", flush=True)
        t0 = time.perf_counter()
        what = step(ctx)
        seconds = time.perf_counter() - t0
        # a reused step keeps the time it took when it did the work
        made_in = earlier.get(step.__name__, {}).get("made_in_s") if what == "reused" else seconds
        ctx["timings"][step.__name__] = {"what": what, "seconds": round(seconds, 1),
                                         "made_in_s": None if made_in is None else round(made_in, 1)}
        atomic_write_text(timings_path, json.dumps(ctx["timings"], indent=1))
    ctx["total_s"] = time.time() - ctx["started"]
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "demo_out"), help="where everything goes (default demo_out/)")
    parser.add_argument("--workers", type=int, default=max(1, min(2, len(os.sched_getaffinity(0)))),
                        help="curation workers (default: up to 2)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    ctx = run_demo(out, args.workers)
    done = [f"{k} {v['seconds']:.0f} s" + (" (reused)" if v["what"] == "reused" else "")
            for k, v in ctx["timings"].items()]
    print(f"demo: finished in {ctx['total_s']:.0f} s ({', '.join(done)}); open {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
