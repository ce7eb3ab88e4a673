"""Commit: the last per-source stage; makes the source's result durable in OUT/_state (see curate.state)."""

from __future__ import annotations

from curate.errors import writing
from curate.stage import Resources, SourceTask, Stage
from curate.state import commit_task


class CommitStage(Stage):
    name = "commit"
    resources = Resources(cpus=0.1)

    def __init__(self, out_dir: str) -> None:
        self.out_dir = str(out_dir)

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        # Commits every task, failed and skipped ones too: their records say why. A commit that cannot be
        # written (a full or read-only OUT) stops the run with OutputError; the source is redone on rerun.
        for task in batch:
            if task.status == "pending":
                task.status = "done"
            with writing(task.work_dir or self.out_dir):
                commit_task(self.out_dir, task)
        return batch
