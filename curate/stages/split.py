"""Split: shot boundaries (curate.split) -> candidate clips with deterministic ids."""

from __future__ import annotations

from dataclasses import replace

from curate.ids import clip_id
from curate.stage import Clip, Resources, SourceTask, Stage


def span_times(frame_times: list[float], fps: float, start: int, end: int) -> tuple[float, float]:
    """Seconds of a half-open frame span: from its first frame's time to the next frame's time (the last
    frame of the video lasts one average frame period)."""
    start_s = frame_times[start]
    if end < len(frame_times):
        end_s = frame_times[end]
    else:
        end_s = frame_times[-1] + (1.0 / fps if fps > 0 else 0.0)
    return float(start_s), float(end_s)


class SplitStage(Stage):
    name = "split"
    resources = Resources(cpus=1.0)

    def __init__(self, config) -> None:
        self.config = config
        self._detector = None

    def setup(self) -> None:
        # one detector per worker: it holds the TransNetV2 model across videos
        from curate.split import SceneDetector

        self._detector = SceneDetector(self.config)

    def __getstate__(self):  # the model is per worker (made in setup), never shipped
        return {**self.__dict__, "_detector": None}

    def process_task(self, task: SourceTask) -> None:
        from curate.split import plan_clips

        if self._detector is None:
            self.setup()
        result = self._detector(task.local_path)
        times = task.frame_times
        if result.num_frames != len(times):
            # The splitter and the probe must number frames alike; trust the splitter's own times.
            times = [float(t) for t in result.frame_times]
            task.frame_times = times
            task.num_frames = len(times)
        clips = []
        # Pieces under the minimum length are candidates too, rejected as too_short, so clips.parquet
        # accounts for every span the splitter found (plan_clips alone would drop them silently).
        for start, end in plan_clips(result, replace(self.config, min_clip_s=0.0)):
            start, end = int(start), int(end)
            if not 0 <= start < end <= len(times):
                raise ValueError(f"splitter planned an impossible span [{start}, {end}) of {len(times)} frames")
            start_s, end_s = span_times(times, task.fps or result.fps, start, end)
            n = end - start
            clip = Clip(
                clip_id=clip_id(task.source, start, end), source=task.source, start_s=start_s, end_s=end_s,
                start_frame=start, end_frame=end, num_frames=n,
                fps=float(n / (end_s - start_s)) if end_s > start_s else float(task.fps or 0.0),
                width=int(task.width or 0), height=int(task.height or 0),
            )
            if end_s - start_s + 1e-9 < self.config.min_clip_s:
                clip.reject("too_short")
            clips.append(clip)
        task.clips = clips

