"""Entry points of shot splitting: detect scenes in a video, then plan candidate clips from them."""

from __future__ import annotations

import math
import os

import numpy as np

from curate.split import content
from curate.split.config import SceneResult, SplitConfig, scenes_from_cuts
from curate.split.frames import decode_small
from dataload.reader import VideoReader


def resolve_splitter(name: str) -> str:
    """`auto` is `content` on a CPU-only machine and `transnetv2` when CUDA is present."""
    if name != "auto":
        return name
    try:
        import torch

        return "transnetv2" if torch.cuda.is_available() else "content"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "content"


class SceneDetector:
    """Detects scenes with one configured splitter; holds its model (TransNetV2) across videos,
    so a curation worker builds it once in setup()."""

    def __init__(self, config: SplitConfig | None = None) -> None:
        self.config = config or SplitConfig()
        self.splitter = resolve_splitter(self.config.splitter)
        self._transnet = None

    def __call__(self, path_or_reader) -> SceneResult:
        """Scenes of a video given by path (or an open VideoReader, whose path is read again)."""
        path = path_or_reader.path if isinstance(path_or_reader, VideoReader) else os.fspath(path_or_reader)
        cfg = self.config
        if self.splitter == "transnetv2":
            if self._transnet is None:
                from curate.split.transnet import TransNetSplitter

                self._transnet = TransNetSplitter(cfg)
            # exact decoding (deblocking on): the frames the package feeds its model
            small = decode_small(path, size=(27, 48), luma=False, skip_deblock=False)
            cuts, transitions = self._transnet.detect(small.frames)
        else:
            # `fixed` needs only timestamps; the luma pass at analysis size is nearly as cheap
            small = decode_small(path, size=(-1, cfg.analysis_width), luma=True)
            if self.splitter == "content":
                cuts, transitions = content.detect(small.frames, cfg)
            else:
                cuts, transitions = fixed_cuts(small.times, cfg.fixed_stride_s), []
        n = len(small.times)
        return SceneResult(num_frames=n, fps=small.fps, cuts=cuts, transitions=transitions,
                           scenes=scenes_from_cuts(n, cuts, transitions), frame_times=small.times,
                           splitter=self.splitter, decode_errors=small.decode_errors)


def fixed_cuts(times: np.ndarray, stride_s: float) -> list[int]:
    """A cut at the first frame at or after every multiple of `stride_s` seconds."""
    if len(times) < 2:
        return []
    marks = np.arange(stride_s, float(times[-1]) + 1e-9, stride_s)
    cuts = np.searchsorted(times, marks - 1e-9)
    return sorted({int(c) for c in cuts if 0 < c < len(times)})


def detect_scenes(path_or_reader, config: SplitConfig | None = None,
                  detector: SceneDetector | None = None) -> SceneResult:
    """Scenes of one video (a path or an open VideoReader) with the configured splitter."""
    return (detector or SceneDetector(config))(path_or_reader)


def plan_clips(scenes: SceneResult, config: SplitConfig) -> list[tuple[int, int]]:
    """Candidate clips as half-open frame spans.

    Each scene is trimmed by `trim_frames` on every side that touches a cut or a transition (not at
    the ends of the video, nor at the artificial boundaries of the `fixed` splitter), then cut into
    equal pieces of at most `max_clip_s`; pieces shorter than `min_clip_s` are dropped. Durations
    come from the frame timestamps (variable frame rate is normal).
    """
    n = scenes.num_frames
    trim = 0 if scenes.splitter == "fixed" else config.trim_frames
    clips = []
    for a, b in scenes.scenes:
        start = a + trim if a > 0 else a
        end = b - trim if b < n else b
        if end - start < 1:
            continue
        t0, t1 = scenes.time_of(start), scenes.time_of(end)
        duration = t1 - t0
        if duration + 1e-9 < config.min_clip_s:
            continue
        pieces = max(1, math.ceil(duration / config.max_clip_s - 1e-9))
        while True:
            marks = [t0 + duration * k / pieces for k in range(pieces + 1)]
            edges = [start] + [_nearest_frame(scenes, m, start, end) for m in marks[1:-1]] + [end]
            # snapping to frames can push a piece past the maximum by a fraction of a frame
            if pieces >= end - start or all(scenes.time_of(e) - scenes.time_of(s) <= config.max_clip_s + 1e-9
                                            for s, e in zip(edges[:-1], edges[1:])):
                break
            pieces += 1
        for s, e in zip(edges[:-1], edges[1:]):
            if e > s and scenes.time_of(e) - scenes.time_of(s) + 1e-9 >= config.min_clip_s:
                clips.append((s, e))
    return clips


def _nearest_frame(scenes: SceneResult, t: float, lo: int, hi: int) -> int:
    times = scenes.frame_times
    i = int(np.searchsorted(times, t))
    cands = [j for j in (i - 1, i) if lo < j < hi]
    if not cands:
        return min(max(i, lo + 1), hi - 1)
    return min(cands, key=lambda j: abs(times[j] - t))
