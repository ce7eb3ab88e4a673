"""Which frames of a clip the models look at, and decoding them as RGB arrays.

Times follow DESIGN.md: seconds from the first decoded frame's timestamp, taken from the stream's pts. A
clip spans ``[start_s, end_s)``; long clips are cut into windows so a VLM describes each part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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


def decode_at(path: str, times: Sequence[float], *, max_side: int | None = None) -> list[np.ndarray]:
    """RGB frames ``(H, W, 3)`` uint8 nearest to each time, in the order asked; decodes the best video stream
    once, front to back, and stops after the last time. Corrupt frames are skipped (tolerant decoding).
    Rotation metadata is applied so frames are upright."""
    import av

    if not times:
        return []
    order = sorted(range(len(times)), key=lambda i: times[i])
    out: list[np.ndarray | None] = [None] * len(times)
    with av.open(path) as container:
        stream = container.streams.best("video")
        if stream is None:
            raise ValueError(f"{path}: no video stream")
        stream.thread_type = "AUTO"
        first_pts = None
        prev = None  # (time, frame) of the last decoded frame
        k = 0

        def take(frame) -> np.ndarray:
            w, h = _scaled_size(frame.width, frame.height, max_side)
            arr = frame.to_ndarray(format="rgb24", width=w, height=h)
            rot = int(getattr(frame, "rotation", 0) or 0) % 360
            return np.ascontiguousarray(np.rot90(arr, k=rot // 90)) if rot else arr

        for frame in _tolerant_frames(container, stream):
            pts = frame.pts if frame.pts is not None else frame.dts
            if pts is None:
                continue
            if first_pts is None:
                first_pts = pts
            t = float((pts - first_pts) * stream.time_base)
            while k < len(order) and times[order[k]] <= t:
                target = times[order[k]]
                pick = frame if prev is None or abs(t - target) <= abs(target - prev[0]) else prev[1]
                out[order[k]] = take(pick)
                k += 1
            if k == len(order):
                break
            prev = (t, frame)
        while k < len(order) and prev is not None:  # times past the last frame take the last frame
            out[order[k]] = take(prev[1])
            k += 1
    if any(f is None for f in out):
        raise ValueError(f"{path}: no decodable frames")
    return out  # type: ignore[return-value]


def _tolerant_frames(container, stream):
    import av

    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue  # a corrupt packet: skip it, as the tolerant reader does
