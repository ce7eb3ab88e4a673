"""The executor protocol (after datatrove's PipelineExecutor): what every executor does with a pipeline.

`run(stages, tasks, on_result, on_stage)` passes every task through the stages in order, each stage
set up once per worker (`setup()`, then `process(batch)` per batch, `teardown()` at the end), and calls
`on_result(task)` in the caller's process as each task finishes, in any order. Tasks are pulled from
`tasks` lazily (bounded work in flight, memory flat in the number of inputs). A stage's exception fails
its source, never the run; a worker that dies fails the source it held. OutputError (OUT full or
read-only) stops the run; a stage that cannot set up stops it with a CurateError; Ctrl-C stops the
workers and raises KeyboardInterrupt.

`map(fn, items)` runs a module-level function over picklable items on the workers and returns the
results in order (the barrier's work that belongs on the workers: writing the shards); an exception of
`fn` is raised in the caller. `close()` releases what the executor holds after the last call (a Ray
instance it started).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from curate.step import PipelineStep
from curate.task import SourceTask

ProgressFn = Callable[[str, int], None]  # (stage name, tasks it finished)
T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    workers: int

    def run(self, stages: list[PipelineStep], tasks: Iterable[SourceTask],
            on_result: Callable[[SourceTask], None], on_stage: ProgressFn | None = None) -> None: ...

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]: ...

    def close(self) -> None: ...
