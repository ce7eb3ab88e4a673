"""The commit stage: decides the verdict of every clip still a candidate (kept) and commits the source,
failed and skipped ones too (their records say why)."""

from __future__ import annotations

import time

from curate.errors import writing
from curate.state import commit_task
from curate.step import PipelineStep, Resources
from curate.task import DONE, PENDING, SourceTask


class CommitStage(PipelineStep):
    name = "commit"
    resources = Resources(cpus=0.1)

    def __init__(self, out_dir: str) -> None:
        self.out_dir = str(out_dir)

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        # A commit that cannot be written (a full or read-only OUT) stops the run with OutputError; the
        # source is redone on rerun.
        for task in batch:
            t0 = time.perf_counter()
            task.analysis = None  # per worker only (and large): never committed, never shipped back
            if task.status == PENDING:
                task.status = DONE
                for clip in task.clips:
                    clip.keep()
            with writing(task.work_dir or self.out_dir):
                commit_task(self.out_dir, task)
            task.stage_seconds[self.name] = task.stage_seconds.get(self.name, 0.0) + time.perf_counter() - t0
        return batch
