"""The unit of work of a curation run: tasks (one per source video) flowing through stages.

A stage is a plain object with `setup()`, `process(batch)` and `teardown()`; the executors (local
processes here, Ray actors in `curate.executors.ray*`) call exactly these, so any stage runs unchanged on
any executor. Tasks are picklable dataclasses holding plain values only (no open files, no tensors), so
they cross process and machine boundaries cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curate.errors import OUTPUT_ERRNOS, OutputError, output_error

# Source status values (sources.parquet `status`).
PENDING, DONE, FAILED, SKIPPED = "pending", "done", "failed", "skipped"
# Clip status values (clips.parquet `status`); a clip is "candidate" until a filter decides.
CANDIDATE, KEPT, REJECTED = "candidate", "kept", "rejected"


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs. Executors use it to size actors; batch_size is tasks per call."""

    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 1


@dataclass
class Clip:
    """One candidate clip of a source: the clips.parquet row (plus caption_windows for the JSON)."""

    clip_id: str
    source: str
    start_s: float
    end_s: float
    start_frame: int
    end_frame: int
    num_frames: int
    fps: float
    width: int
    height: int
    motion: float | None = None
    jitter: float | None = None
    sharpness: float | None = None
    brightness: float | None = None
    aesthetic: float | None = None
    caption: str | None = None
    caption_model: str | None = None
    embedding: list[float] | None = None
    status: str = CANDIDATE
    reject_reason: str | None = None
    shard: str | None = None
    caption_windows: list[dict[str, Any]] = field(default_factory=list)
    # Where the transcoded mp4 lies while the source is in flight / committed (relative to the task's
    # work dir); not a parquet column.
    media: str | None = None

    def reject(self, reason: str) -> None:
        """Reject with the first reason only: later filters never overwrite an earlier verdict."""
        if self.status != REJECTED:
            self.status = REJECTED
            self.reject_reason = reason

    @property
    def active(self) -> bool:
        return self.status != REJECTED


@dataclass
class SourceTask:
    """One input video and everything the stages learn about it."""

    index: int  # position in the expanded input list: fixes the output order
    source: str  # the path or URL as given (clip ids derive from it)
    key: str  # stable id of the source (state folder name)
    local_path: str | None = None  # a local file to decode (fsspec URLs are fetched first)
    caption_path: str | None = None  # .srt/.vtt beside the video
    work_dir: str | None = None  # a private folder for this task's intermediate files
    status: str = PENDING
    reason: str | None = None
    duration_s: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    decode_errors: int | None = None
    clips: list[Clip] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)  # per decoded frame, from the stream's pts
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == PENDING

    def fail(self, reason: str) -> None:
        self.status = FAILED
        self.reason = reason
        self.clips = []

    def skip(self, reason: str) -> None:
        self.status = SKIPPED
        self.reason = reason
        self.clips = []


def one_line(exc: BaseException) -> str:
    """An exception as one short line (reasons live in parquet cells and on terminals)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Stage:
    """Base class: subclasses set `name`/`resources` and override `process_task` (or `process`).

    `process` runs every still-pending task of the batch; an exception in one task marks that source
    failed with the stage's name and a one-line reason, and the batch goes on (a bad input never stops
    the run). A disk that is full or read-only (OUTPUT_ERRNOS) is no fault of the source: it raises
    OutputError, which stops the run (exit 2) and leaves the source to the rerun.
    """

    name: str = "stage"
    resources: Resources = Resources()

    def setup(self) -> None:
        """Load models/open resources once per worker."""

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        import time

        for task in batch:
            if not task.active:
                continue
            t0 = time.perf_counter()
            try:
                self.process_task(task)
            except OutputError:
                raise
            except OSError as exc:
                if exc.errno in OUTPUT_ERRNOS:  # a full or read-only disk: no source can succeed, stop the run
                    raise output_error(exc, task.work_dir) from None
                task.fail(f"{self.name}: {one_line(exc)}")
            except Exception as exc:  # noqa: BLE001 - one bad source must not stop the run
                task.fail(f"{self.name}: {one_line(exc)}")
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + time.perf_counter() - t0
        return batch

    def process_task(self, task: SourceTask) -> None:
        raise NotImplementedError(f"{type(self).__name__}.process_task")

    def teardown(self) -> None:
        """Release what setup() took."""
