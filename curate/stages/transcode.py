"""Transcode: re-encode every kept clip, frame-accurately, into the task's work dir."""

from __future__ import annotations

import os

from curate.config import TranscodeConfig
from curate.stage import Resources, SourceTask, Stage
from curate.transcode import encode, output_size


class TranscodeStage(Stage):
    name = "transcode"

    def __init__(self, config: TranscodeConfig) -> None:
        self.config = config

    @property
    def resources(self) -> Resources:  # type: ignore[override]
        return Resources(cpus=1.0, gpus=0.1 if self.config.encoder == "nvenc" else 0.0)

    def process_task(self, task: SourceTask) -> None:
        from dataload.reader import VideoReader

        size = output_size(int(task.width or 0), int(task.height or 0), self.config.max_height)
        for clip in task.clips:  # every row describes the clip as it is (or would be) encoded
            clip.height, clip.width = size
        kept = [c for c in task.clips if c.active]
        if not kept:
            return
        os.makedirs(task.work_dir, exist_ok=True)
        with VideoReader(task.local_path) as reader:
            for clip in kept:
                name = f"{clip.clip_id}.mp4"
                frames = self._frames(reader, clip, size)
                n = encode(frames, os.path.join(task.work_dir, name), size, clip.fps, self.config)
                if n != clip.num_frames:
                    raise RuntimeError(f"clip {clip.clip_id}: decoded {n} of its {clip.num_frames} frames")
                clip.media = name

    @staticmethod
    def _frames(reader, clip, size):
        """(time from clip start, RGB frame) for exactly the frames [start_frame, end_frame)."""
        for idx, t, arr in reader.iter_frames(size=size, start_s=max(0.0, clip.start_s - 1e-6),
                                              end_s=clip.end_s):
            if idx < clip.start_frame:
                continue
            if idx >= clip.end_frame:
                break
            yield float(t) - clip.start_s, arr
