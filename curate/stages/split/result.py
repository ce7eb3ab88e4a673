"""What a splitter finds in one video: cuts, gradual transitions and the scenes between them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
