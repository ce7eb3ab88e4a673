"""Config section `split`: how videos are split into scenes and scenes into candidate clips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from curate.errors import CurateError
from curate.typed_config import Range

SPLITTERS = ("auto", "content", "transnetv2", "fixed")
Splitter = Literal["auto", "content", "transnetv2", "fixed"]
Seconds = Annotated[float, Range(0)]
Score = Annotated[float, Range(0)]


@dataclass
class SplitConfig:
    """The content detector's thresholds are in units of the mean absolute difference of contrast-normalised
    luma (each frame scaled to zero mean and unit deviation), so they do not depend on exposure; see
    content.py for what each one gates and flashes.py for how brief flashes are told from cuts."""

    splitter: Splitter = "auto"  # auto: content on a CPU-only machine, transnetv2 with CUDA
    # clip planning
    min_clip_s: Seconds = 2.0  # shorter scene pieces are rejected as too_short
    max_clip_s: Annotated[float, Range(above=0)] = 10.0  # longer scenes are cut into pieces of at most this
    trim_frames: Annotated[int, Range(0, 1000)] = 2  # frames kept clear of every cut and detected transition
    fixed_stride_s: Annotated[float, Range(above=0)] = 5.0  # scene length of the `fixed` splitter
    # content detector
    analysis_width: Annotated[int, Range(16, 1024)] = 64  # luma frames this wide (height keeps the aspect)
    cut_threshold: Score = 0.5  # a hard cut needs at least this frame difference ...
    cut_margin: Score = 0.3  # ... and this much above the local median of differences
    baseline_window: Annotated[int, Range(1, 1000)] = 12  # frames either side for that local median
    flash_frames: Annotated[int, Range(0, 30)] = 3  # content that returns within this many frames: a flash
    search_px: Annotated[int, Range(0, 16)] = 2  # block-matching radius (analysis pixels) after global motion
    dark_std: Score = 6.0  # a frame this flat (luma std) ...
    dark_mean: Annotated[float, Range(0, 255)] = 60.0  # ... and this dark is black (the middle of a fade)
    fade_ratio: Annotated[float, Range(0, 1)] = 0.25  # or a frame whose std falls below this share of its surroundings'
    dissolve_halfwidths: tuple[Annotated[int, Range(1, 500)], ...] = (2, 3, 5, 8, 12)  # blend-test windows
    dissolve_fit: Score = 0.5  # blend residual / nearest-endpoint residual must stay below this
    dissolve_min_change: Score = 0.5  # the two ends of a dissolve differ at least like a cut does
    # transnetv2
    transnet_threshold: Annotated[float, Range(0, 1)] = 0.5
    # 100-frame windows per forward pass on a GPU (0: 16, batching fills it); a CPU streams one
    # window at a time on each core, reusing the overlap between consecutive windows
    transnet_batch_windows: Annotated[int, Range(0, 4096)] = 0
    device: str = "auto"  # auto: cuda when present, else cpu

    def check(self) -> None:
        """What the field types cannot say alone."""
        if self.min_clip_s > self.max_clip_s:
            raise CurateError(f"split.min_clip_s ({self.min_clip_s}) must not exceed split.max_clip_s "
                              f"({self.max_clip_s})")
