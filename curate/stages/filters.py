"""Filters: score every candidate clip and reject by the documented reasons (curate.config docstring)."""

from __future__ import annotations

import numpy as np

from curate import scores
from curate.config import FilterConfig
from curate.stage import Resources, SourceTask, Stage


class FilterStage(Stage):
    name = "filter"
    resources = Resources(cpus=1.0)

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self._flow = None

    def setup(self) -> None:
        self._flow = scores.make_flow()

    def __getstate__(self):  # the OpenCV object is per worker (made in setup), never shipped
        state = dict(self.__dict__)
        state["_flow"] = None
        return state

    def process_task(self, task: SourceTask) -> None:
        from dataload.reader import VideoReader

        cfg = self.config
        if self._flow is None:
            self._flow = scores.make_flow()
        todo = []
        for clip in task.clips:
            if not clip.active:  # rejected upstream (too_short scene pieces): keep that first reason
                continue
            dur = clip.end_s - clip.start_s
            if dur < cfg.min_clip_s:
                clip.reject("too_short")
            elif dur > cfg.max_clip_s:
                clip.reject("too_long")
            elif clip.width < cfg.min_width or clip.height < cfg.min_height:
                clip.reject("too_small")
            else:
                todo.append(clip)
        if not todo:
            return
        # decord's random access is fast but less forgiving of damaged streams: PyAV reads those
        backend = "pyav" if task.decode_errors else "auto"
        with VideoReader(task.local_path, backend=backend) as reader:
            for clip in todo:
                self._score(reader, clip, task)
                self._judge(clip)

    def _score(self, reader, clip, task: SourceTask) -> None:
        cfg = self.config
        w, h = int(task.width or clip.width), int(task.height or clip.height)
        trips = scores.sample_triplets(clip.start_frame, clip.end_frame, cfg.motion_pairs)
        sharp_idx = scores.sample_even(clip.start_frame, clip.end_frame, cfg.sharpness_frames)
        small = scores.analysis_size(w, h, cfg.analysis_height)
        flat = sorted({i for t in trips for i in t} | set(sharp_idx))
        frames = reader.read(indices=flat, size=small, luma=True).numpy()
        by_index = {i: frames[k] for k, i in enumerate(flat)}
        triplets = [tuple(by_index[i] for i in t) for t in trips]
        clip.motion, clip.jitter = scores.motion_and_jitter(triplets, self._flow)
        sharp_size = scores.analysis_size(w, h, cfg.sharpness_height)
        sharp_frames = (np.stack([by_index[i] for i in sharp_idx]) if sharp_size == small
                        else reader.read(indices=sharp_idx, size=sharp_size, luma=True).numpy())
        clip.sharpness = scores.sharpness(sharp_frames)
        clip.brightness = scores.brightness(frames)

    def _judge(self, clip) -> None:
        cfg = self.config
        if clip.brightness < cfg.min_brightness:
            clip.reject("dark")
        elif clip.brightness > cfg.max_brightness:
            clip.reject("bright")
        elif clip.motion < cfg.min_motion:
            clip.reject("static")
        elif clip.jitter is not None and clip.jitter > cfg.max_jitter:
            clip.reject("jittery")
        elif clip.sharpness < cfg.min_sharpness:
            clip.reject("blurry")
