"""The split stage: shot boundaries -> candidate clips with deterministic ids. Scene pieces shorter than
`split.min_clip_s` are candidates too, rejected as too_short, so clips.parquet accounts for every span the
splitter found."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from curate.filter import ClipFilter
from curate.ids import clip_id
from curate.stages.split.config import SplitConfig
from curate.stages.split.detector import SceneDetector
from curate.stages.split.plan import plan_clips, span_times
from curate.step import PipelineStep, Resources
from curate.task import Clip, SourceTask


class ScenePieceTooShort(ClipFilter):
    """A piece of a scene shorter than split.min_clip_s (a short shot, or what trimming left of it)."""

    reason: ClassVar[str] = "too_short"

    def __init__(self, config: SplitConfig) -> None:
        self.min_s = config.min_clip_s

    def keep(self, clip: Clip) -> bool:
        return clip.duration_s + 1e-9 >= self.min_s


class SplitStage(PipelineStep):
    name = "split"
    resources = Resources(cpus=1.0)

    def __init__(self, config: SplitConfig) -> None:
        self.config = config
        self.too_short = ScenePieceTooShort(config)
        self._detector: SceneDetector | None = None

    @property
    def analysis_width(self) -> int | None:
        """The luma analysis track the probe should read (None: TransNetV2 decodes its own). `auto` asks
        for it too: it is the content splitter on a CPU, and costs a GPU machine only a small conversion."""
        return None if self.config.splitter == "transnetv2" else self.config.analysis_width

    def setup(self) -> None:
        # one detector per worker: it holds the TransNetV2 model across videos
        self._detector = SceneDetector(self.config)

    def __getstate__(self):  # the model is per worker (made in setup), never shipped
        return {**self.__dict__, "_detector": None}

    def process_task(self, task: SourceTask) -> None:
        if task.image:  # a still is one clip of its one frame: nothing to split, no length to judge
            fps = float(task.fps or 1.0)
            task.clips = [Clip(clip_id=clip_id(task.source, 0, 1), source=task.source, start_s=0.0, end_s=1.0 / fps,
                               start_frame=0, end_frame=1, num_frames=1, fps=fps, width=int(task.width or 0),
                               height=int(task.height or 0))]
            return
        if self._detector is None:
            self.setup()
        assert self._detector is not None
        if task.analysis is not None and self._detector.analysis_width is not None:
            result = self._detector.from_analysis(task.analysis)
        else:
            result = self._detector(task.local_path or task.source)
        times = task.frame_times
        if result.num_frames != len(times):
            # The splitter and the probe must number frames alike; trust the splitter's own times.
            times = [float(t) for t in result.frame_times]
            task.frame_times = times
            task.num_frames = len(times)
        clips = []
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
            self.too_short(clip)
            clips.append(clip)
        task.clips = clips
