"""A preview of the filters' verdict from the analysis track (the probe's small analysis-grade luma), made
before a clip is decoded: the filter stage encodes a clip during its own decoding pass only when the
preview expects it to be kept, so the encoder's work is rarely spent on a clip the filters then reject.

The preview decides nothing: the verdict is always the filters' own, on exact scores. A wrong preview
only costs time, never changes an output: a wasted encode (about 3-5 ms a frame at 640x272) when it
expects a clip kept that is then rejected, a second decoding pass in the transcode stage (about 0.5 ms a
frame) when it expects a rejection that does not come. So it expects a rejection a little before each
threshold. It measures brightness, motion and jitter on the analysis frames (motion and jitter scaled to
the filters' `analysis_height`); on the shared real videos and the curate benchmark's corpus these come
within 0.005 (brightness) and about 20% (motion, jitter) of the exact scores. Sharpness cannot be told
from frames 64 pixels wide: a blurry clip is still encoded before it is rejected.
"""

from __future__ import annotations

import numpy as np

from curate.stages.filters import scores
from curate.stages.filters.config import FilterConfig
from curate.task import AnalysisFrames, Clip

BRIGHTNESS_MARGIN = 0.01  # expected dark below min_brightness + this (bright: above max - this)
MOTION_FACTOR = 1.5  # expected static below 1.5 x min_motion
JITTER_FACTOR = 0.8  # expected jittery above 0.8 x max_jitter


def likely_kept(clip: Clip, analysis: AnalysisFrames | None, height: int, cfg: FilterConfig, flow) -> bool:
    if analysis is None or clip.end_frame > len(analysis.frames):
        return True
    frames = analysis.frames
    trips = scores.sample_triplets(clip.start_frame, clip.end_frame, cfg.motion_pairs)
    idx = sorted({i for t in trips for i in t} | set(scores.sample_even(clip.start_frame, clip.end_frame,
                                                                        cfg.sharpness_frames)))
    bright = scores.brightness(frames[idx])
    if bright < cfg.min_brightness + BRIGHTNESS_MARGIN or bright > cfg.max_brightness - BRIGHTNESS_MARGIN:
        return False
    motion, jitter = scores.motion_and_jitter([tuple(frames[i] for i in t) for t in trips], flow)
    scale = min(cfg.analysis_height, height) / max(frames.shape[1], 1)  # px/frame at the filters' rows
    if motion * scale < MOTION_FACTOR * cfg.min_motion:
        return False
    return not (jitter is not None and np.isfinite(jitter) and jitter * scale > JITTER_FACTOR * cfg.max_jitter)
