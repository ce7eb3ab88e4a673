"""The transcode stage: every kept clip that has no mp4 yet (the filter stage encodes the clips it keeps
while it decodes them, when no later stage can still reject them) is encoded here, in one decoding pass
over the source. Every clip row, kept or not, gets the size its clip is (or would be) encoded at."""

from __future__ import annotations

from curate.common.clip_pass import decode_clips
from curate.stages.transcode.config import TranscodeConfig
from curate.stages.transcode.encode import ClipEncoder
from curate.step import PipelineStep, Resources
from curate.task import SourceTask
from dataload.reader import VideoReader


class TranscodeStage(PipelineStep):
    name = "transcode"

    def __init__(self, config: TranscodeConfig) -> None:
        self.config = config
        self.encoder = ClipEncoder(config)

    @property
    def resources(self) -> Resources:  # type: ignore[override]
        return Resources(cpus=1.0, gpus=0.1 if self.config.encoder == "nvenc" else 0.0)

    def process_task(self, task: SourceTask) -> None:
        w, h = int(task.width or 0), int(task.height or 0)
        size = self.encoder.size(w, h)
        for clip in task.clips:  # every row describes the clip as it is (or would be) encoded
            clip.height, clip.width = size
        todo = [c for c in task.clips if c.active and c.media is None]
        if not todo:
            return
        with VideoReader(task.local_path or task.source, backend="pyav") as reader:
            decode_clips(reader, [(c, [self.encoder.sink(c, task.work_dir or ".", w, h)]) for c in todo])
