"""Candidate clips from scenes: each scene trimmed clear of its boundaries and cut into pieces of at most
`max_clip_s`, as half-open frame spans with their times from the stream's timestamps."""

from __future__ import annotations

import math

import numpy as np

from curate.stages.split.config import SplitConfig
from curate.stages.split.result import SceneResult


def span_times(frame_times: list[float] | np.ndarray, fps: float, start: int, end: int) -> tuple[float, float]:
    """Seconds of a half-open frame span: from its first frame's time to the next frame's time (the last
    frame of the video lasts one average frame period)."""
    start_s = frame_times[start]
    if end < len(frame_times):
        end_s = frame_times[end]
    else:
        end_s = frame_times[-1] + (1.0 / fps if fps > 0 else 0.0)
    return float(start_s), float(end_s)


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
