"""The keep rules of the filter stage, one small class each, in the order a clip is checked (FILTERS):
first the clip's own facts (no decoding), then the measured scores. Thresholds: filters/config.py.
A one-frame clip (an image) has no duration and no motion to judge: the length and motion rules keep it."""

from __future__ import annotations

from typing import ClassVar

from curate.filter import ClipFilter
from curate.stages.filters.config import FilterConfig
from curate.task import Clip


class _Rule(ClipFilter):
    def __init__(self, config: FilterConfig) -> None:
        self.config = config


class TooShort(_Rule):
    reason: ClassVar[str] = "too_short"

    def keep(self, clip: Clip) -> bool:
        return clip.num_frames == 1 or not clip.duration_s < self.config.min_clip_s


class TooLong(_Rule):
    reason: ClassVar[str] = "too_long"

    def keep(self, clip: Clip) -> bool:
        return clip.num_frames == 1 or not clip.duration_s > self.config.max_clip_s


class TooSmall(_Rule):
    reason: ClassVar[str] = "too_small"

    def keep(self, clip: Clip) -> bool:
        return not (clip.width < self.config.min_width or clip.height < self.config.min_height)


class Dark(_Rule):
    """Black or nearly black (mean luma)."""

    reason: ClassVar[str] = "dark"
    score: ClassVar[str | None] = "brightness"

    def keep(self, clip: Clip) -> bool:
        return not clip.brightness < self.config.min_brightness


class Bright(_Rule):
    """Washed out (mean luma)."""

    reason: ClassVar[str] = "bright"
    score: ClassVar[str | None] = "brightness"

    def keep(self, clip: Clip) -> bool:
        return not clip.brightness > self.config.max_brightness


class Static(_Rule):
    """A still picture (optical flow)."""

    reason: ClassVar[str] = "static"
    score: ClassVar[str | None] = "motion"

    def keep(self, clip: Clip) -> bool:
        return clip.num_frames == 1 or not clip.motion < self.config.min_motion


class Jittery(_Rule):
    """Camera shake: the global motion changes from one frame pair to the next."""

    reason: ClassVar[str] = "jittery"
    score: ClassVar[str | None] = "jitter"

    def keep(self, clip: Clip) -> bool:
        return clip.num_frames == 1 or clip.jitter is None or not clip.jitter > self.config.max_jitter


class Blurry(_Rule):
    """Little fine detail for its contrast (variance of the Laplacian)."""

    reason: ClassVar[str] = "blurry"
    score: ClassVar[str | None] = "sharpness"

    def keep(self, clip: Clip) -> bool:
        return not clip.sharpness < self.config.min_sharpness


# The order a clip is checked in (the first rule it breaks names its reason).
FILTERS: tuple[type[_Rule], ...] = (TooShort, TooLong, TooSmall, Dark, Bright, Static, Jittery, Blurry)
