"""Which frames of a clip the models look at, and decoding them as RGB arrays.

Times follow DESIGN.md: seconds from the first decoded frame's timestamp, taken from the stream's pts. A
clip spans ``[start_s, end_s)``; long clips are cut into windows so a VLM describes each part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from curate.task import SourceTask


def clip_windows(start_s: float, end_s: float, window_s: float) -> list[tuple[float, float]]:
    """Split ``[start_s, end_s)`` into windows of ``window_s`` (the last takes the remainder; a remainder
    shorter than half a window joins the previous one). ``window_s <= 0``: one window."""
    length = max(0.0, end_s - start_s)
    if window_s <= 0 or length <= window_s:
        return [(start_s, end_s)]
    n = max(1, math.floor(length / window_s))
    if length - n * window_s >= window_s / 2:
        n += 1
    edges = [start_s + i * window_s for i in range(n)] + [end_s]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def sample_times(start_s: float, end_s: float, *, fps: float, max_frames: int) -> list[float]:
    """Times at ``fps`` over the span (the middle of each interval), thinned evenly to ``max_frames``; at
    least one frame (the middle) however short the span."""
    length = max(0.0, end_s - start_s)
    n = max(1, int(math.floor(length * fps))) if fps > 0 else max_frames
    n = max(1, min(n, max_frames))
    return [start_s + (i + 0.5) * length / n for i in range(n)]


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def nearest_indices(frame_times: Sequence[float], times: Sequence[float]) -> np.ndarray:
    """For each time, the decoded frame whose timestamp is nearest (ties: the earlier frame)."""
    ft = np.asarray(frame_times, dtype=np.float64)
    if ft.size == 0:
        raise ValueError("no decodable frames")
    t = np.asarray(times, dtype=np.float64)
    hi = np.clip(np.searchsorted(ft, t, side="left"), 0, ft.size - 1)
    lo = np.clip(hi - 1, 0, ft.size - 1)
    return np.where(np.abs(ft[lo] - t) <= np.abs(ft[hi] - t), lo, hi)


def known_facts(task: SourceTask) -> dict:
    """What the probe stage already learnt (frame times, display size), as `decode_at`'s keywords: saves
    the reader a scan."""
    size = (task.width, task.height) if task.width and task.height else None
    return {"frame_times": task.frame_times or None, "size": size}


def decode_at(path: str, times: Sequence[float], *, max_side: int | None = None,
              frame_times: Sequence[float] | None = None, size: tuple[int, int] | None = None,
              backend: str = "pyav") -> list[np.ndarray]:
    """RGB frames ``(H, W, 3)`` uint8 nearest to each time, in the order asked, through dataload's reader
    (display orientation, tolerant decoding, the same stream the probe picks). ``frame_times`` (seconds of
    each decoded frame, as the probe stage records) saves a scan; ``size`` is the display ``(width, height)``
    when known; frames are scaled so their longer side is at most ``max_side``."""
    from dataload.reader import VideoReader

    if not len(times):
        return []
    with VideoReader(path, backend=backend) as reader:
        ft = frame_times if frame_times else reader.timestamps()
        idx = nearest_indices(ft, times)
        w, h = size if size else (reader.info.width, reader.info.height)
        tw, th = _scaled_size(int(w), int(h), max_side)
        frames = reader.read_array(indices=idx.tolist(), size=(th, tw))
    return [np.ascontiguousarray(f) for f in frames]
