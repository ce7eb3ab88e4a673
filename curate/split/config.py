"""Configuration and result types of shot splitting."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITTERS = ("auto", "content", "transnetv2", "fixed")


@dataclass
class SplitConfig:
    """How videos are split into scenes and scenes into candidate clips.

    The content detector's thresholds are in units of the mean absolute difference of
    contrast-normalised luma (each frame scaled to zero mean and unit deviation), so they do not
    depend on exposure or flashes; see curate/split/content.py for what each one gates.
    """

    splitter: str = "auto"
    # clip planning
    min_clip_s: float = 2.0  # shorter scene pieces are dropped
    max_clip_s: float = 10.0  # longer scenes are cut into pieces of at most this length
    trim_frames: int = 2  # frames kept clear of every cut and detected transition
    fixed_stride_s: float = 5.0  # scene length of the `fixed` splitter
    # content detector
    analysis_width: int = 64  # luma frames this wide (height keeps the aspect)
    cut_threshold: float = 0.5  # a hard cut needs at least this frame difference ...
    cut_margin: float = 0.3  # ... and this much above the local median of differences
    baseline_window: int = 12  # frames either side for that local median
    flash_frames: int = 3  # a change undone within this many frames is a flash, not a cut
    search_px: int = 2  # block-matching radius (analysis pixels) after global motion compensation
    dark_std: float = 6.0  # a frame this flat (luma std) ...
    dark_mean: float = 60.0  # ... and this dark is black (the middle of a fade)
    fade_ratio: float = 0.25  # or a frame whose std falls below this fraction of its surroundings'
    dissolve_halfwidths: tuple[int, ...] = (2, 3, 5, 8, 12)  # blend-test windows (frames either side)
    dissolve_fit: float = 0.5  # blend residual / nearest-endpoint residual must stay below this
    dissolve_min_change: float = 0.5  # the two ends of a dissolve differ at least like a cut does
    # transnetv2
    transnet_threshold: float = 0.5
    # 100-frame windows per forward pass on a GPU (0: 16, batching fills it); a CPU streams one
    # window at a time on each core, reusing the overlap between consecutive windows
    transnet_batch_windows: int = 0
    device: str = "auto"  # auto: cuda when present, else cpu

    def __post_init__(self) -> None:
        if self.splitter not in SPLITTERS:
            raise ValueError(f"unknown splitter {self.splitter!r}; expected one of {', '.join(SPLITTERS)}")
        if self.min_clip_s < 0 or self.max_clip_s <= 0 or self.min_clip_s > self.max_clip_s:
            raise ValueError(f"need 0 <= min_clip_s <= max_clip_s and max_clip_s > 0, got "
                             f"{self.min_clip_s}, {self.max_clip_s}")
        if self.trim_frames < 0:
            raise ValueError("trim_frames must be >= 0")
        if self.fixed_stride_s <= 0:
            raise ValueError("fixed_stride_s must be > 0")
        self.dissolve_halfwidths = tuple(int(h) for h in self.dissolve_halfwidths)


@dataclass
class SceneResult:
    """Shot boundaries of one video (frames numbered as decoded; spans half-open)."""

    num_frames: int
    fps: float
    cuts: list[int]
    transitions: list[tuple[int, int]]
    scenes: list[tuple[int, int]]
    frame_times: np.ndarray = field(repr=False)
    splitter: str = "content"
    decode_errors: int = 0

    def time_of(self, frame: int) -> float:
        """Seconds of `frame` from the first frame; the end of the video for frame == num_frames."""
        if frame < self.num_frames:
            return float(self.frame_times[frame])
        last = float(self.frame_times[-1]) if self.num_frames else 0.0
        step = 1.0 / self.fps if self.fps > 0 else 0.0
        return last + step


def scenes_from_cuts(num_frames: int, cuts: list[int], transitions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Scenes: the frames between consecutive cuts, without any frame of a gradual transition."""
    in_transition = np.zeros(num_frames + 1, bool)
    for ts, te in transitions:
        in_transition[max(ts, 0):min(te, num_frames)] = True
    edges = set(c for c in cuts if 0 < c < num_frames)
    scenes, start = [], None
    for i in range(num_frames + 1):
        boundary = i == num_frames or in_transition[i] or i in edges
        if start is not None and boundary:
            scenes.append((start, i))
            start = None
        if i < num_frames and not in_transition[i] and start is None:
            start = i
    return scenes
