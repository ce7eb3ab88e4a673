"""A deterministic analyser of shapes-world videos: what object, of which colour and shape, moving where.

Per frame: the background colour is the median colour of the frame (the object covers far less than
half of it); pixels farther than `threshold` (RGB distance) from it are foreground; a 3x3 opening
removes specks; the largest connected component is the object when its area is plausible. Over the
video: the object's colour is the median of its interior pixels, named by the nearest colour of the
world's palette; its shape is named by the median extent (area / bounding-box area: triangle 1/2,
circle pi/4, square 1); its direction by a least-squares line through the centroid track (too slow a
track is "static", which matches no direction). Flicker is the mean absolute change of background
pixels between consecutive frames (0..255): a steady video has ~0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from dataload.shapes_world import DIRECTIONS, ShapesWorld

# extent = area / bounding-box area of each shape (anti-aliased edges at half coverage keep these)
EXTENT = {"triangle": 0.5, "circle": math.pi / 4, "square": 1.0}


@dataclass
class Analysis:
    found: bool                  # an object was segmented in at least half of the frames
    color: str | None
    shape: str | None
    direction: str | None        # None: no object, or slower than min_speed ("static")
    speed: float                 # pixels per frame along the fitted track
    rgb: tuple[int, int, int] | None
    extent: float | None
    area: float | None           # median object area, pixels
    object_frames: int
    flicker: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnalyserConfig:
    threshold: float = 60.0      # RGB distance from the background colour that counts as object
    min_area_ratio: float = 0.2  # of the world's object area: smaller components are noise
    max_area_frac: float = 0.4   # of the frame: larger components are not an object on a background
    min_found_frac: float = 0.5  # of the frames with an object, for a verdict
    min_speed_ratio: float = 0.25  # of the world's speed; slower tracks are "static"


def segment(frame: np.ndarray, cfg: AnalyserConfig, min_area: float) -> tuple[np.ndarray | None, np.ndarray]:
    """(object mask or None, background colour) of one (H, W, 3) uint8 frame."""
    f = frame.astype(np.float32)
    bg = np.median(f.reshape(-1, 3), axis=0)
    fg = (np.linalg.norm(f - bg, axis=-1) > cfg.threshold).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n < 2:
        return None, bg
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = stats[k, cv2.CC_STAT_AREA]
    if area < min_area or area > cfg.max_area_frac * fg.size:
        return None, bg
    return labels == k, bg


def analyse_video(frames: np.ndarray, world: ShapesWorld | None = None,
                  cfg: AnalyserConfig | None = None) -> Analysis:
    """Measure one video (T, H, W, 3) uint8 of the given world (default: the demo's world)."""
    world = world or ShapesWorld()
    cfg = cfg or AnalyserConfig()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {frames.shape}")
    t, h, w, _ = frames.shape
    # the world's sizes are for its own resolution; scale to the video's
    scale = min(h, w) / min(world.height, world.width)
    object_area = math.pi / 4 * (world.diameter() * scale) ** 2
    min_area = cfg.min_area_ratio * object_area
    centres, extents, areas, pixels, bg_masks = [], [], [], [], []
    times = []
    for i, frame in enumerate(frames):
        mask, _ = segment(frame, cfg, min_area)
        if mask is None:
            bg_masks.append(None)
            continue
        ys, xs = np.nonzero(mask)
        area = float(len(xs))
        box = float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
        centres.append((xs.mean(), ys.mean()))
        times.append(i)
        extents.append(area / box)
        areas.append(area)
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        pixels.append(frame[inner if inner.any() else mask])
        bg_masks.append(~cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))
    flicker = _flicker(frames, bg_masks)
    found = len(times) >= max(2, cfg.min_found_frac * t)
    if not found:
        return Analysis(False, None, None, None, 0.0, None, None, None, len(times), flicker)
    rgb = np.median(np.concatenate(pixels).astype(np.float32), axis=0)
    color = min(world.colors, key=lambda c: float(np.sum((rgb - np.array(world.colors[c], np.float32)) ** 2)))
    extent = float(np.median(extents))
    shape = min(world.shapes, key=lambda s: abs(extent - EXTENT[s]))
    tt = np.array(times, np.float64)
    c = np.array(centres, np.float64)
    vx, vy = (np.polyfit(tt, c[:, k], 1)[0] for k in range(2))
    speed = float(math.hypot(vx, vy))
    direction = None
    if speed >= cfg.min_speed_ratio * world.step() * scale:
        direction = max(world.directions, key=lambda d: vx * DIRECTIONS[d][0] + vy * DIRECTIONS[d][1])
    return Analysis(True, color, shape, direction, round(speed, 3), tuple(int(round(x)) for x in rgb),
                    round(extent, 3), float(np.median(areas)), len(times), flicker)


def _flicker(frames: np.ndarray, bg_masks: list) -> float:
    """Mean |change| of background pixels between consecutive frames (whole frame when no object)."""
    diffs = []
    f = frames.astype(np.float32)
    for i in range(1, len(frames)):
        d = np.abs(f[i] - f[i - 1]).mean(axis=-1)
        m = np.ones(d.shape, bool)
        for mk in (bg_masks[i - 1], bg_masks[i]):
            if mk is not None:
                m &= mk
        diffs.append(float(d[m].mean()) if m.any() else float(d.mean()))
    return round(float(np.mean(diffs)), 3) if diffs else 0.0
