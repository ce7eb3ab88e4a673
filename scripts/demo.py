"""`make demo`: make a small synthetic corpus, look at it, curate it with `vfm-curate run`, say where the
results are. Everything lands in demo_out/ (rerunning resumes; `make clean` removes it).

    python scripts/demo.py [--out demo_out] [--workers N]

The demo is a list of steps (STEPS); each takes and extends one shared dict. Later parts of the pipeline
(training, generation) append their steps after `curate_corpus`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

# name -> (shots, caption per shot): good shots move and are sharp; "static" shots and blurred ones are
# there for the filters to reject.
CORPUS = {
    "harbour": [("pan", {}, "a slow pan along a harbour wall"), ("static", {}, "a still photo of a boat"),
                ("objects", {}, "coloured balls bouncing on a table")],
    "forest": [("objects", {}, "birds flitting between branches"), ("pan", {"blur": 3.0}, "a blurry pan across trees"),
               ("pan", {"direction": 90.0}, "a camera tilting up a tree trunk")],
    "city": [("objects", {}, "cars crossing a square at noon"), ("pan", {}, "a pan over rooftops"),
             ("static", {"blur": 2.0}, "a blurred still of a street sign")],
    "night": [("objects", {}, "lanterns drifting over a river"), ("pan", {"brightness": 0.1}, "a dark street at night"),
              ("pan", {"direction": 45.0}, "a drive past lit windows")],
}
SHOT_FRAMES = 75  # 3 s at 25 fps: above the splitter's 2 s minimum after trimming
SIZE = (192, 108)


def make_corpus(ctx: dict) -> None:
    """Synthetic videos with cuts and fades, plus an .srt with one cue per shot."""
    from dataload.synthetic import Shot, Transition, make_video, write_srt

    videos = ctx["out"] / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for k, (name, shots) in enumerate(CORPUS.items()):
        path = videos / f"{name}.mp4"
        if not path.is_file():
            spec = [Shot(kind, SHOT_FRAMES, seed=10 * k + i, **kw) for i, (kind, kw, _) in enumerate(shots)]
            # a fade out of a nearly black shot is invisible, so dark shots end with a cut
            trans = [Transition("fade", 10) if i % 2 and shots[i][1].get("brightness", 1) > 0.5
                     else Transition("cut") for i in range(len(shots) - 1)]
            truth = make_video(path, spec, trans, width=SIZE[0], height=SIZE[1], fps=25, seed=k)
            bounds = [0] + truth.cuts + [truth.num_frames]
            cues = [(truth.frame_times[a], truth.frame_times[b - 1], text)
                    for (a, b), (_, _, text) in zip(zip(bounds[:-1], bounds[1:]), shots)]
            write_srt(path.with_suffix(".srt"), cues)
    ctx["videos"] = videos
    print(f"corpus: {len(CORPUS)} synthetic videos with .srt captions in {videos}")


def probe_corpus(ctx: dict) -> None:
    """What the reader sees in each video, and a strip of 8 frames of each (PNG)."""
    import numpy as np
    from PIL import Image

    from dataload.probe import probe
    from dataload.reader import VideoReader

    strips = ctx["out"] / "strips"
    strips.mkdir(exist_ok=True)
    for path in sorted(ctx["videos"].glob("*.mp4")):
        info = probe(path)
        with VideoReader(path) as reader:
            frames = reader.read(num_frames=8, size=(72, -1)).numpy()
        strip = np.concatenate(list(frames), axis=1)
        png = strips / f"{path.stem}.png"
        tmp = png.with_name(png.stem + ".tmp.png")
        Image.fromarray(strip).save(tmp)
        os.replace(tmp, png)
        print(f"  {path.name}: {info.codec} {info.width}x{info.height}, {info.num_frames} frames, "
              f"{info.duration_s:.2f} s at {info.fps:.2f} fps -> {png}")


def curate_corpus(ctx: dict) -> None:
    """`vfm-curate run` on the corpus (the installed console script when present)."""
    exe = Path(sys.executable).parent / "vfm-curate"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "curate.cli"]
    out = ctx["out"] / "curated"
    cmd += ["run", str(ctx["videos"]), "--out", str(out), "--workers", str(ctx["workers"])]
    print("$ " + " ".join(cmd[-7:] if exe.is_file() else cmd))
    t0 = time.perf_counter()
    status = subprocess.run(cmd, cwd=ROOT).returncode
    if status not in (0, 3):
        raise SystemExit(f"demo: vfm-curate run failed with exit status {status}")
    ctx["curated"] = out
    ctx["curate_s"] = time.perf_counter() - t0


def show_results(ctx: dict) -> None:
    import pyarrow.parquet as pq

    out = ctx["curated"]
    clips = pq.read_table(out / "clips.parquet").to_pylist()
    reasons: dict[str, int] = {}
    for c in clips:
        if c["reject_reason"]:
            reasons[c["reject_reason"]] = reasons.get(c["reject_reason"], 0) + 1
    kept = sum(c["status"] == "kept" for c in clips)
    print(f"clips: {kept} kept of {len(clips)} candidates; rejected: "
          + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"))
    print(f"shards: {out / 'shards'}")
    print(f"report: {out / 'report.md'} (figures beside it), frame strips: {ctx['out'] / 'strips'}")


def train_and_generate(ctx: dict) -> None:
    """Train `tiny` on the curated clips (2 ranks, cp=2), generate from a training caption, report."""
    from demo_train import demo_step  # scripts/demo_train.py, beside this file

    demo_step(ctx)


# The demo, in order. Training and generation steps go after curate_corpus (they read ctx["curated"]).
STEPS = [make_corpus, probe_corpus, curate_corpus, show_results, train_and_generate]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "demo_out"), help="where everything goes (default demo_out/)")
    parser.add_argument("--workers", type=int, default=max(1, min(2, len(os.sched_getaffinity(0)))))
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    ctx = {"out": out, "workers": args.workers}
    for step in STEPS:
        print(f"== {step.__name__}")
        step(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
