"""Clip quality scores on small luma frames: motion and jitter (DIS optical flow), sharpness (variance of
the Laplacian), brightness (mean luma). Pure functions of uint8 arrays, so they are easy to test."""

from __future__ import annotations

import cv2
import numpy as np


def brightness(frames: np.ndarray) -> float:
    """Mean luma in [0, 1] over (T, H, W) uint8 frames."""
    return float(frames.astype(np.float32).mean() / 255.0)


def sharpness(frames: np.ndarray) -> float:
    """Median over frames of the variance of the Laplacian divided by the variance of the picture.

    The plain variance of the Laplacian scales with contrast (a dim but crisp scene would look blurry);
    dividing by the luma variance cancels contrast and keeps what blur removes: the fine detail. A flat
    frame scores 0."""
    return float(np.median([frame_sharpness(f) for f in frames]))


def frame_sharpness(frame: np.ndarray) -> float:
    """One frame's sharpness (see `sharpness`)."""
    f64 = frame.astype(np.float64)
    return float(cv2.Laplacian(f64, cv2.CV_64F, ksize=3).var() / (f64.var() + 1.0))


class Flow:
    """DIS optical flow (OpenCV), the fast preset: it is meant for small frames like ours.

    One DIS object per frame size: an OpenCV DIS object keeps state sized by the frames it saw first, and
    its results on frames of another size then differ from a fresh object's (motion 3.43 instead of 3.24 on
    a real clip), which would make a clip's scores depend on what its worker scored before."""

    def __init__(self) -> None:
        self._by_size: dict[tuple[int, ...], object] = {}

    def calc(self, a: np.ndarray, b: np.ndarray, flow=None) -> np.ndarray:
        dis = self._by_size.get(a.shape)
        if dis is None:
            dis = self._by_size[a.shape] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return dis.calc(a, b, flow)


def make_flow() -> Flow:
    return Flow()


def motion_and_jitter(triplets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], flow=None
                      ) -> tuple[float, float | None]:
    """motion: median over sampled frame pairs of the 90th percentile of the flow magnitude (pixels per
    frame): a moving subject on a still background counts (a mean over the frame would drown it), while
    codec noise and film grain stay well below it.
    jitter: mean over triplets of how much the global (median) motion changes from one frame pair to the
    next; a steady pan or zoom keeps it near 0, camera shake makes it large. None when no triplet has
    three frames."""
    flow = flow or make_flow()
    mags: list[float] = []
    jitters: list[float] = []
    for trip in triplets:
        globals_ = []
        for a, b in zip(trip[:-1], trip[1:]):
            f = flow.calc(a, b, None)
            mags.append(float(np.percentile(np.linalg.norm(f, axis=2), 90)))
            globals_.append(np.median(f.reshape(-1, 2), axis=0))
        if len(globals_) == 2:
            jitters.append(float(np.linalg.norm(globals_[1] - globals_[0])))
    if not mags:
        return 0.0, None
    return float(np.median(mags)), (float(np.mean(jitters)) if jitters else None)


def sample_triplets(start: int, end: int, count: int) -> list[list[int]]:
    """`count` runs of up to 3 consecutive frame indices spread evenly over [start, end)."""
    n = end - start
    run = min(3, n)
    if run < 2:
        return []
    last = end - run
    if count <= 1 or last == start:
        firsts = [start]
    else:
        firsts = sorted({int(round(start + k * (last - start) / (count - 1))) for k in range(count)})
    return [list(range(f, f + run)) for f in firsts]


def sample_even(start: int, end: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over [start, end), centres of equal parts."""
    n = end - start
    count = max(1, min(count, n))
    return sorted({start + int((k + 0.5) * n / count) for k in range(count)})


def analysis_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """(h, w) with `target_height` rows (never upscaling), aspect kept, even sizes."""
    h = min(target_height, height)
    w = max(2, int(round(width * h / max(height, 1) / 2)) * 2)
    return max(2, h - h % 2), w
