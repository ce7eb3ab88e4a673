"""What flows through a curation run: one task per source video, holding its candidate clips.

Tasks are picklable dataclasses of plain values (no open files, no tensors), so they cross process and
machine boundaries cheaply; the one exception, `analysis`, lives only while the task is in one worker and
is never committed. A clip is the clip record of dataload.clip_record (its parquet row and shard JSON)
plus what curation needs while it works on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataload.clip_record import KEPT, REJECTED, ClipRecord

# Source status values (sources.parquet `status`).
PENDING, DONE, FAILED, SKIPPED = "pending", "done", "failed", "skipped"
# A clip is a candidate until a filter rejects it or its source is committed (then it is kept).
CANDIDATE = "candidate"
__all__ = ["CANDIDATE", "DONE", "FAILED", "KEPT", "PENDING", "REJECTED", "SKIPPED", "AnalysisFrames", "Clip",
           "SourceTask"]


@dataclass
class Clip(ClipRecord):
    """One candidate clip of a source: its record, with the verdict kept through `reject` and `keep`."""

    status: str = CANDIDATE
    # Where the clip's mp4 lies (relative to the task's work dir) once encoded; not part of the record.
    media: str | None = None

    def reject(self, reason: str) -> None:
        """Reject with the first reason only: later rules never overwrite an earlier verdict."""
        if self.status != REJECTED:
            self.status = REJECTED
            self.reject_reason = reason

    def keep(self) -> None:
        """A clip no rule rejected is kept (the commit of its source decides)."""
        if self.status != REJECTED:
            self.status, self.reject_reason = KEPT, None

    @property
    def active(self) -> bool:
        return self.status != REJECTED

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class AnalysisFrames:
    """Every frame of a source as small luma (the analysis track), from the probe's one decoding pass,
    for the splitter and the filters' previews. Per worker only: dropped before a task is committed."""

    frames: np.ndarray  # (N, h, w) uint8 luma (TransNetV2 reads (N, 27, 48, 3) RGB, outside a run's task)
    times: np.ndarray  # (N,) float64 seconds from the first frame
    fps: float  # frames over duration, the last frame lasting a typical interval
    decode_errors: int = 0


@dataclass
class SourceTask:
    """One input video and everything the stages learn about it."""

    index: int  # position in the expanded input list: fixes the output order
    source: str  # the path or URL as given (clip ids derive from it)
    key: str  # stable id of the source (state folder name)
    local_path: str | None = None  # a local file to decode (fsspec URLs are fetched first)
    caption_path: str | None = None  # .srt/.vtt beside the video
    work_dir: str | None = None  # a private folder for this task's intermediate files
    size_bytes: int = 0  # of the local file: larger sources are started first
    status: str = PENDING
    reason: str | None = None
    duration_s: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    decode_errors: int | None = None
    image: bool = False  # a still picture (one frame from an image format): curated as a one-frame clip
    clips: list[Clip] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)  # per decoded frame, from the stream's pts
    stage_seconds: dict[str, float] = field(default_factory=dict)
    analysis: AnalysisFrames | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status == PENDING

    def fail(self, reason: str) -> None:
        self.status = FAILED
        self.reason = reason
        self.clips = []
        self.analysis = None

    def skip(self, reason: str) -> None:
        self.status = SKIPPED
        self.reason = reason
        self.clips = []
        self.analysis = None
