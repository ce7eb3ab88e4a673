"""Config section `filters`: the thresholds of the keep rules (rules.py) and how clips are measured.

Default thresholds, and why (measured on single-shot synthetic videos of dataload.synthetic at 160x96
and 640x360, and on the real videos in ../shared/data/videos; tests/curate/test_filters.py keeps the
synthetic side honest):
- Motion, jitter and brightness are computed on luma frames resized to `analysis_height` rows (aspect
  kept), sharpness on `sharpness_height` rows, so scores do not depend on the source resolution.
- motion = 90th percentile of the DIS flow magnitude, px/frame at 96 rows. min_motion 0.1: a still
  shot measures 0.00, a still shot with film grain (synthetic "texture") <= 0.06; the slowest synthetic
  pan (0.5 px/frame at 360 rows) 0.15, small moving objects 0.27, the real clips with a moving subject
  0.11-0.39 and handheld/driving footage > 1.
- jitter = mean change of the global (median) flow between consecutive frame pairs. max_jitter 1.5:
  steady pans and zooms measure < 0.05 and pure noise 0.8; synthetic camera shake 2.5 (640x360) to 8.9
  (160x96) and the real heavy-shake fire2.mp4 1.9.
- sharpness = variance of the Laplacian / variance of the luma (contrast-free). min_sharpness 0.3:
  Gaussian blur sigma >= 2 px gives <= 0.21, sharp synthetic shots >= 0.72, dim but sharp ones 1.3; the
  real videos 0.16 (a motion-blurred handheld stretch) to 2.1.
- min_brightness 0.08 / max_brightness 0.92 (mean luma, 0..1): black and nearly black clips (brightness
  0.05, the dark NASA footage) measure < 0.06, dim real scenes >= 0.11; washed-out/white clips > 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from curate.errors import CurateError
from curate.typed_config import Range

Side = Annotated[int, Range(0, 1 << 16)]
Rows = Annotated[int, Range(16, 4320)]
Count = Annotated[int, Range(1, 256)]
Unit = Annotated[float, Range(0, 1)]
NonNegative = Annotated[float, Range(0)]


@dataclass
class FilterConfig:
    min_clip_s: NonNegative = 1.0  # too_short below
    max_clip_s: Annotated[float, Range(above=0)] = 60.0  # too_long above
    min_width: Side = 64  # too_small below either
    min_height: Side = 64
    analysis_height: Rows = 96  # rows of the luma frames motion, jitter and brightness use
    sharpness_height: Rows = 240  # rows for the Laplacian (blur vanishes when frames are made too small)
    motion_pairs: Count = 8  # frame pairs (and triplets for jitter) sampled evenly over the clip
    sharpness_frames: Count = 3
    min_motion: NonNegative = 0.1  # static below
    max_jitter: NonNegative = 1.5  # jittery above
    min_sharpness: NonNegative = 0.3  # blurry below
    min_brightness: Unit = 0.08  # dark below
    max_brightness: Unit = 0.92  # bright above

    def check(self) -> None:
        if self.min_clip_s > self.max_clip_s:
            raise CurateError(f"filters.min_clip_s ({self.min_clip_s}) must not exceed filters.max_clip_s "
                              f"({self.max_clip_s})")
