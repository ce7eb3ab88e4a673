"""Measuring one clip's scores from the frames of a decoding pass (a `ClipSink`): the sampled frame pairs
and triplets as luma at `analysis_height` rows (motion, jitter, brightness) and a few frames at
`sharpness_height` rows (sharpness), taken from the exact decode as the pass goes by.

`likely_rejected` tells, part way through a clip, that its sharpness frames so far are well below the
threshold: the clip's speculative encoding then stops early (the verdict still waits for every frame)."""

from __future__ import annotations

import numpy as np

from curate.common.clip_pass import Views
from curate.stages.filters import scores
from curate.stages.filters.config import FilterConfig
from curate.task import Clip
from dataload.backends.pyav_reads import Decoded
from dataload.errors import VideoError

EARLY_BLUR = 0.8


class ScoreSink:
    def __init__(self, clip: Clip, width: int, height: int, cfg: FilterConfig, flow) -> None:
        self.clip, self.flow = clip, flow
        self.trips = scores.sample_triplets(clip.start_frame, clip.end_frame, cfg.motion_pairs)
        self.sharp_idx = scores.sample_even(clip.start_frame, clip.end_frame, cfg.sharpness_frames)
        self.small = scores.analysis_size(width, height, cfg.analysis_height)
        self.sharp_size = scores.analysis_size(width, height, cfg.sharpness_height)
        self.flat = sorted({i for t in self.trips for i in t} | set(self.sharp_idx))
        self._want = set(self.flat)
        self._sharp_want = set(self.sharp_idx) if self.sharp_size != self.small else set()
        self.by_index: dict[int, np.ndarray] = {}
        self.sharp_values: dict[int, float] = {}
        self.min_sharpness = cfg.min_sharpness
        self.likely_rejected = False

    def feed(self, d: Decoded, views: Views) -> None:
        if d.index in self._want:
            self.by_index[d.index] = views(d, self.small, True)
        if d.index in self.sharp_idx:
            frame = self.by_index[d.index] if not self._sharp_want else views(d, self.sharp_size, True)
            self.sharp_values[d.index] = scores.frame_sharpness(frame)
            # EARLY_BLUR x the threshold: a clip this blurry so far is most likely rejected as blurry
            self.likely_rejected = float(np.median(list(self.sharp_values.values()))) < EARLY_BLUR * self.min_sharpness

    def finish(self) -> None:
        missing = sorted(self._want - self.by_index.keys())
        if missing:
            raise VideoError(f"frame index {missing[0]} of clip {self.clip.clip_id} out of range (the video "
                             "ended before it)")
        clip, by_index = self.clip, self.by_index
        triplets = [tuple(by_index[i] for i in t) for t in self.trips]
        clip.motion, clip.jitter = scores.motion_and_jitter(triplets, self.flow)
        clip.sharpness = float(np.median([self.sharp_values[i] for i in self.sharp_idx]))
        clip.brightness = scores.brightness(np.stack([by_index[i] for i in self.flat]))

    def abort(self) -> None:
        self.by_index.clear()
        self.sharp_values.clear()
