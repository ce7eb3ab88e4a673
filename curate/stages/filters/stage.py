"""The filter stage: the keep rules on the clip's facts first (no decoding), then one decoding pass over the
source that measures the scores of the clips still in and applies the score rules.

When the pipeline gives it an encoder (no later stage can reject a clip before it is transcoded), the same
pass also encodes each clip the preview expects to keep: a kept clip is then decoded once for its scores
and its mp4 together. A clip encoded here and then rejected loses its file; a kept clip left unencoded
(the preview expected otherwise, or its encoder failed) is encoded by the transcode stage.
"""

from __future__ import annotations

import contextlib
import os
import time

from curate.common.clip_pass import ClipSink, Views, decode_clips
from curate.stages.filters import scores
from curate.stages.filters.config import FilterConfig
from curate.stages.filters.measure import ScoreSink
from curate.stages.filters.preview import likely_kept
from curate.stages.filters.rules import FILTERS
from curate.stages.transcode.encode import ClipEncoder, EncodeSink
from curate.state import thumbnail_name
from curate.step import PipelineStep, Resources
from curate.task import SourceTask
from dataload.backends.pyav_reads import Decoded
from dataload.reader import VideoReader


class _Speculative:
    """An encode sink whose failure is not the source's: it is dropped (the clip stays unencoded and the
    transcode stage encodes it, reporting any error as its own), and so it is when the clip's scores so far
    say it will most likely be rejected. Its seconds are the transcode's."""

    def __init__(self, sink: EncodeSink, task: SourceTask, score: ScoreSink) -> None:
        self.sink, self.task, self.score, self.ok = sink, task, score, True

    def _timed(self, fn, *args) -> None:
        if not self.ok:
            return
        t0 = time.perf_counter()
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - see the class docstring
            self.ok = False
            self.sink.abort()
        finally:
            s = self.task.stage_seconds
            s["transcode"] = s.get("transcode", 0.0) + time.perf_counter() - t0

    def feed(self, d: Decoded, views: Views) -> None:
        if self.ok and self.score.likely_rejected:
            self.ok = False
            self.sink.abort()
        self._timed(self.sink.feed, d, views)

    def finish(self) -> None:
        self._timed(self.sink.finish)

    def abort(self) -> None:
        self.sink.abort()


class FilterStage(PipelineStep):
    name = "filter"
    resources = Resources(cpus=1.0)

    def __init__(self, config: FilterConfig, encoder: ClipEncoder | None = None) -> None:
        self.config = config
        self.encoder = encoder
        self.rules = [cls(config) for cls in FILTERS]
        self._flow = None

    def setup(self) -> None:
        self._flow = scores.make_flow()

    def __getstate__(self):  # the OpenCV object is per worker (made in setup), never shipped
        return {**self.__dict__, "_flow": None}

    def process_task(self, task: SourceTask) -> None:
        try:
            self._filter(task)
        finally:
            task.analysis = None  # nothing after the filters reads it

    def _filter(self, task: SourceTask) -> None:
        if self._flow is None:
            self.setup()
        facts = [r for r in self.rules if r.score is None]
        measured = [r for r in self.rules if r.score is not None]
        todo = [c for c in task.clips if all(rule(c) for rule in facts)]  # rejected ones keep their first reason
        if not todo:
            return
        w, h = int(task.width or todo[0].width), int(task.height or todo[0].height)
        jobs: list[tuple] = []
        for clip in todo:
            score = ScoreSink(clip, w, h, self.config, self._flow)
            sinks: list[ClipSink] = [score]  # scored before encoded: the encoder can stop on its word
            if self.encoder is not None and likely_kept(clip, task.analysis, h, self.config, self._flow):
                sinks.append(_Speculative(self.encoder.sink(clip, task.work_dir or ".", w, h), task, score))
            jobs.append((clip, sinks))
        with VideoReader(task.local_path or task.source, backend="pyav") as reader:
            decode_clips(reader, jobs)
        for clip in todo:
            for rule in measured:
                rule(clip)
            if not clip.active and clip.media is not None:  # encoded on the preview's word, then rejected
                os.remove(os.path.join(task.work_dir or ".", clip.media))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(task.work_dir or ".", thumbnail_name(clip.clip_id)))
                clip.media = None
