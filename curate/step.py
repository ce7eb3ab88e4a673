"""The unit of work of a pipeline (after datatrove's PipelineStep): a step with a name and the resources one
worker of it needs, set up once per worker, that processes batches of source tasks.

Executors (curate.executors) call exactly `setup()`, `process(batch)` and `teardown()`, so every step runs
unchanged on every executor. `process` runs `process_task` on each still-pending task and records the
seconds it took; an exception fails that source only, with the step's name and a one-line reason. A disk
that is full or read-only (OUTPUT_ERRNOS) is no fault of the source: OutputError stops the run (exit 2)
and leaves the source to the rerun.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

from curate.errors import OUTPUT_ERRNOS, OutputError, output_error
from curate.task import SourceTask


@dataclass(frozen=True)
class Resources:
    """What one worker of a step needs. Executors size actors with it; batch_size is tasks per call."""

    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 1


def one_line(exc: BaseException) -> str:
    """An exception as one short line (reasons live in parquet cells and on terminals)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class PipelineStep:
    """Base class: subclasses set `name` (and `resources`) and override `process_task` (or `process`)."""

    name: ClassVar[str] = "step"
    resources: Resources = Resources()

    def setup(self) -> None:
        """Load models, open resources: once per worker, before its first batch."""

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        for task in batch:
            if not task.active:
                continue
            t0 = time.perf_counter()
            others = _others(task, self.name)  # seconds a step books under another name (see below)
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
            own = time.perf_counter() - t0 - (_others(task, self.name) - others)
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + own
        return batch

    def process_task(self, task: SourceTask) -> None:
        raise NotImplementedError(f"{type(self).__name__}.process_task")

    def teardown(self) -> None:
        """Release what setup() took."""


def _others(task: SourceTask, name: str) -> float:
    """Seconds booked under other names: work a step does for a later one (the filter stage encoding the
    clips it keeps) counts as that one's."""
    return sum(v for k, v in task.stage_seconds.items() if k != name)


class DatasetStep(Protocol):
    """A step at the barrier: runs once in the driver, after every source is committed, over all of them
    in input order (cross-dataset work such as dedup needs every clip scored first). It may reject clips."""

    name: str

    def __call__(self, tasks: list[SourceTask]) -> None: ...
