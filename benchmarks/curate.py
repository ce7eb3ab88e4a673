"""`python -m benchmarks curate`: end-to-end curation throughput, video seconds per wall second.

Contenders, on the same inputs (the shared real videos when present + a seeded synthetic corpus), timed
interleaved (median of --repeats), each into a fresh output folder:
  ours_local  `vfm-curate run` with the local executor (--workers processes)
  ours_ray    the same with --executor ray on a local Ray cluster of --workers CPUs (started once, before
              timing; its start-up time is reported apart)
  naive       PySceneDetect's ContentDetector + `split_video_ffmpeg` (the ffmpeg program from
              imageio-ffmpeg) cutting every scene to a file, then per-clip filters (brightness, sharpness,
              DIS optical-flow motion on every frame of each clip) in a plain loop, one process
Ratios: ours_local / ours_ray (1.0 = Ray costs nothing) and ours_local / naive.
Video seconds: the sum of the probed durations of the sources the run finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import BenchResult, median, time_interleaved

REAL_VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos"


def add_arguments(parser) -> None:
    parser.add_argument("--videos", default=os.environ.get("VFM_REAL_VIDEOS", str(REAL_VIDEOS)),
                        help="folder of real videos to include (skipped when absent)")
    parser.add_argument("--synthetic", type=int, default=6, help="synthetic videos in the corpus (seeded)")
    parser.add_argument("--workers", type=int, default=2, help="local workers and Ray CPUs")
    parser.add_argument("--cache", default="bench_out/curate", help="folder for the synthetic corpus")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray contender")
    parser.add_argument("--no-naive", action="store_true", help="leave out the naive contender")
    parser.add_argument("--models", action="store_true",
                        help="instead: clips per second of each model stage (CLIP scores, VLM captions)")
    parser.add_argument("--real-size", action="store_true",
                        help="with --models: random models of real size (CLIP ViT-L/14, Qwen2-VL-2B shapes; a GPU job)")
    parser.add_argument("--clips", type=int, default=16, help="with --models: clips per stage run")


def synthetic_corpus(folder: Path, count: int) -> list[str]:
    """Seeded videos of 4 shots each (cuts, fades, dissolves; static, blurred and moving shots), 320x180."""
    from dataload.synthetic import Shot, make_video, random_shots

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"synthetic_{i:02d}.mp4"
        if not path.is_file():
            shots, transitions = random_shots(4, seed=100 + i, min_frames=30, max_frames=60)
            if i % 3 == 2:  # some blurred shots for the sharpness filter
                shots[1] = Shot(shots[1].kind, shots[1].num_frames, seed=shots[1].seed, blur=3.0)
            make_video(path, shots, transitions, width=320, height=180, seed=i)
        paths.append(str(path))
    return paths


def real_inputs(folder: str) -> list[str]:
    p = Path(folder)
    if not (p / "ground_truth.json").is_file():
        return []
    return sorted(str(f) for f in p.iterdir() if f.suffix in (".mp4", ".mkv", ".webm", ".avi"))


# --- the naive pipeline ----------------------------------------------------------------------------------

def naive_filters(clip_path: str, cfg) -> tuple[str, dict]:
    """Decode every frame of a clip file and score it: mean luma, variance of the Laplacian, DIS flow."""
    import av
    import cv2
    import numpy as np

    lumas, times = [], []
    with av.open(clip_path) as c:
        for f in c.decode(video=0):
            times.append(float(f.time or 0.0))
            y = f.to_ndarray(format="gray")
            h, w = y.shape
            lumas.append(cv2.resize(y, (max(2, round(w * cfg.analysis_height / h)), cfg.analysis_height),
                                    interpolation=cv2.INTER_AREA))
    if not lumas:
        return "empty", {}
    bright = float(np.mean([y.mean() for y in lumas]) / 255.0)
    sharp = float(np.median([cv2.Laplacian(y.astype(np.float64), cv2.CV_64F).var() for y in lumas]))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    mags = [float(np.linalg.norm(dis.calc(a, b, None), axis=-1).mean()) for a, b in zip(lumas, lumas[1:])]
    motion = float(np.median(mags)) if mags else 0.0
    duration = (times[-1] - times[0]) * len(times) / max(1, len(times) - 1)
    if duration < cfg.min_clip_s:
        reason = "too_short"
    elif bright < cfg.min_brightness:
        reason = "dark"
    elif motion < cfg.min_motion:
        reason = "static"
    else:
        reason = "kept"
    return reason, {"brightness": bright, "sharpness": sharp, "motion": motion}


def naive_pipeline(inputs: list[str], out: Path, cfg) -> dict:
    from scenedetect import ContentDetector, detect, split_video_ffmpeg

    out.mkdir(parents=True, exist_ok=True)
    verdicts: dict[str, int] = {}
    for i, path in enumerate(inputs):
        try:
            scenes = detect(path, ContentDetector(), backend="pyav")
        except Exception:  # noqa: BLE001 - a broken input: the naive loop just moves on
            verdicts["failed"] = verdicts.get("failed", 0) + 1
            continue
        if not scenes:
            continue
        folder = out / f"{i:03d}"
        folder.mkdir()
        split_video_ffmpeg(path, scenes, output_dir=folder, output_file_template="clip-$SCENE_NUMBER.mp4",
                           arg_override="-map 0:v:0 -an -c:v libx264 -preset veryfast -crf 20 -threads 1",
                           show_progress=False, show_output=False)
        for clip in sorted(folder.glob("clip-*.mp4")):
            reason, _ = naive_filters(str(clip), cfg)
            verdicts[reason] = verdicts.get(reason, 0) + 1
    return verdicts


# --- run ---------------------------------------------------------------------------------------------------

def run_models(args) -> BenchResult:
    """Clips per second of each model stage on clips of a synthetic video (frame decoding included)."""
    import torch

    from curate.config import ModelsConfig
    from curate.stages.clip_scores.stage import ClipScoreStage
    from curate.stages.clip_scores.tiny import save_aesthetic_head, save_tiny_clip
    from curate.stages.vlm_caption.stage import CaptionModelStage
    from curate.stages.vlm_caption.tiny import save_tiny_qwen2vl
    from curate.task import Clip, SourceTask
    from dataload.synthetic import Shot, make_video

    root = Path(tempfile.mkdtemp(prefix="bench_models_"))
    try:
        video = root / "clips.mp4"
        seconds_per_clip = 2.0
        make_video(video, [Shot("pan", int(25 * seconds_per_clip * args.clips), seed=1)], width=640, height=360)
        clip_dir = save_tiny_clip(root / "clip", real_size=args.real_size)
        dim = 768 if args.real_size else 16
        head = save_aesthetic_head(root / "head.safetensors", dim, hidden=(1024, 128, 64, 16) if args.real_size else (8,))
        vlm_dir = save_tiny_qwen2vl(root / "vlm", real_size=args.real_size)
        cfg = ModelsConfig()
        cfg.clip.model, cfg.aesthetic.enabled, cfg.aesthetic.head = str(clip_dir), True, str(head)
        cfg.aesthetic.threshold = float("-inf")
        cfg.embedding.enabled = True
        cfg.vlm.enabled, cfg.vlm.model, cfg.vlm.max_new_tokens = True, str(vlm_dir), 32
        cfg.vlm.batch_size = 8 if torch.cuda.is_available() else 2

        def task() -> SourceTask:
            t = SourceTask(index=0, source=str(video), key="bench", local_path=str(video), width=640, height=360)
            t.clips = [Clip(clip_id=f"c{i:03d}", source=str(video), start_s=i * seconds_per_clip,
                            end_s=(i + 1) * seconds_per_clip, start_frame=i * 50, end_frame=(i + 1) * 50,
                            num_frames=50, fps=25.0, width=640, height=360) for i in range(args.clips)]
            return t

        rows = []
        for stage in (ClipScoreStage(cfg.clip, cfg.aesthetic, cfg.embedding), CaptionModelStage(cfg.vlm)):
            stage.setup()
            stage.process([task()])  # warm-up (kernels, caches)
            times = time_interleaved({stage.name: lambda s=stage: s.process([task()])}, repeats=args.repeats,
                                     warmup=0)[stage.name]
            device = str(getattr(stage.encoder if hasattr(stage, "encoder") else stage.captioner, "device", "cpu"))
            rows.append({"stage": stage.name, "device": device, "clips": args.clips, "median_s": median(times),
                         "clips_per_s": args.clips / median(times)})
            stage.teardown()
        size = "real-size random (CLIP ViT-L/14, Qwen2-VL-2B shapes)" if args.real_size else "tiny random"
        return BenchResult(name="curate-models", columns=["stage", "device", "clips", "median_s", "clips_per_s"],
                           rows=rows, notes=[f"models: {size}; {seconds_per_clip:g} s clips of a 640x360 video; "
                                             f"CLIP {cfg.clip.frames} frames/clip, VLM up to {cfg.vlm.max_frames} "
                                             f"frames/window, {cfg.vlm.max_new_tokens} new tokens"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args) -> BenchResult:
    if getattr(args, "models", False):
        return run_models(args)
    import pyarrow.parquet as pq

    from curate.config import load_config
    from curate.runner import run_curation

    cache = Path(args.cache)
    inputs = real_inputs(args.videos) + synthetic_corpus(cache / "synthetic", args.synthetic)
    cfg = load_config()
    scratch = Path(tempfile.mkdtemp(prefix="bench_curate_"))
    counter = {"n": 0}

    def fresh() -> Path:
        counter["n"] += 1
        return scratch / f"run{counter['n']:03d}"

    last: dict[str, Path] = {}

    def ours(executor: str):
        def go():
            out = fresh()
            run_curation(inputs, out, cfg, executor=executor, workers=args.workers, progress=False)
            prev = last.get(executor)
            if prev is not None:
                shutil.rmtree(prev, ignore_errors=True)
            last[executor] = out
        return go

    contenders = {"ours_local": ours("local")}
    notes = []
    ray_start_s = None
    if not args.no_ray:
        import ray

        t0 = time.perf_counter()
        if not ray.is_initialized():
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
        ray_start_s = time.perf_counter() - t0
        contenders["ours_ray"] = ours("ray")
    naive_verdicts: dict = {}
    if not args.no_naive:
        def naive():
            out = fresh()
            naive_verdicts.clear()
            naive_verdicts.update(naive_pipeline(inputs, out, cfg.filters))
            shutil.rmtree(out, ignore_errors=True)
        contenders["naive"] = naive

    try:
        times = time_interleaved(contenders, repeats=args.repeats, warmup=0)
        done = pq.read_table(last["local"] / "sources.parquet").to_pylist()
        video_s = sum(r["duration_s"] or 0.0 for r in done if r["status"] == "done")
        clips = pq.read_table(last["local"] / "clips.parquet").to_pylist()
        kept = sum(r["status"] == "kept" for r in clips)
        if "ray" in last:
            same = (pq.read_table(last["ray"] / "clips.parquet").drop(["shard"])
                    .equals(pq.read_table(last["local"] / "clips.parquet").drop(["shard"])))
            notes.append(f"ray and local clips.parquet (without shard) identical: {same}")
    finally:
        if ray_start_s is not None:
            import ray

            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for name, ts in times.items():
        med = median(ts)
        rows.append({"contender": name, "median_s": med, "min_s": min(ts), "video_s": video_s,
                     "video_s_per_wall_s": video_s / med, "runs": len(ts)})
    speed = {r["contender"]: r["video_s_per_wall_s"] for r in rows}
    ratios = {}
    if "ours_ray" in speed:
        ratios["local/ray (throughput)"] = speed["ours_local"] / speed["ours_ray"]
    if "naive" in speed:
        ratios["ours_local/naive (throughput)"] = speed["ours_local"] / speed["naive"]
    notes.append(f"inputs: {len(inputs)} videos ({len(real_inputs(args.videos))} real), {video_s:.1f} s of video; "
                 f"ours kept {kept} of {len(clips)} candidate clips; naive verdicts {naive_verdicts}")
    if ray_start_s is not None:
        notes.append(f"ray start-up (not timed): {ray_start_s:.1f} s; workers/CPUs: {args.workers}")
    return BenchResult(name="curate", columns=["contender", "median_s", "min_s", "video_s", "video_s_per_wall_s",
                                               "runs"], rows=rows, ratios=ratios, notes=notes,
                       extra={"video_s": video_s, "inputs": inputs})
