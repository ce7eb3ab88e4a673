"""The local executor with real worker processes: every task once, setup once per worker, bounded
in-flight work, a failing stage or a dying worker fails only its own source."""

from __future__ import annotations

import os

from curate.executors.local import LocalExecutor
from curate.step import PipelineStep, Resources
from curate.task import SourceTask


class TagStage(PipelineStep):
    """Writes which process (and its setup count) handled the task."""

    name = "tag"
    resources = Resources(cpus=1)

    def __init__(self) -> None:
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process_task(self, task: SourceTask) -> None:
        if task.source == "raise":
            raise ValueError("bad\nframe data")
        if task.source == "die":
            os._exit(7)
        task.codec = f"{os.getpid()}:{self.setups}"


class DoneStage(PipelineStep):
    name = "done"

    def process(self, batch):
        for t in batch:
            if t.status == "pending":
                t.status = "done"
        return batch


def _tasks(names, counter):
    for i, name in enumerate(names):
        counter["yielded"] += 1
        yield SourceTask(index=i, source=name, key=str(i))


def _run(names, workers=2):
    counter = {"yielded": 0, "returned": 0, "max_out": 0}
    results, stages_seen = [], []

    def on_result(task):
        counter["returned"] += 1
        counter["max_out"] = max(counter["max_out"], counter["yielded"] - counter["returned"] + 1)
        results.append(task)

    ex = LocalExecutor(workers=workers)
    try:
        ex.run([TagStage(), DoneStage()], _tasks(names, counter), on_result, lambda stage, n: stages_seen.append(stage))
    finally:
        ex.close()
    return results, counter, stages_seen


def test_every_task_once_in_worker_processes():
    names = [f"v{i}" for i in range(12)] + ["raise", "die", "v12"]
    results, counter, stages_seen = _run(names)
    by_source = {t.source: t for t in results}
    assert len(results) == len(names) == len(by_source)
    ok = [by_source[n] for n in names if n.startswith("v")]
    assert all(t.status == "done" for t in ok)
    pids = {t.codec.split(":")[0] for t in ok}
    assert str(os.getpid()) not in pids and len(pids) >= 2  # real worker processes (one replaced)
    assert {t.codec.split(":")[1] for t in ok} == {"1"}  # setup ran once per worker
    assert by_source["raise"].status == "failed" and by_source["raise"].reason == "tag: bad frame data"
    assert by_source["die"].status == "failed" and "worker died" in by_source["die"].reason
    assert counter["max_out"] <= 2  # never more tasks in flight than workers
    assert stages_seen.count("tag") == len(names) - 1  # the dead worker reported nothing


def test_inline_mode_runs_in_this_process():
    results, _, _ = _run(["a", "b"], workers=0)
    assert [t.codec.split(":")[0] for t in results] == [str(os.getpid())] * 2


def test_standard_pipeline_stages(tmp_path):
    from curate.config import load_config
    from curate.pipeline import build_pipeline

    pipe = build_pipeline(load_config(), str(tmp_path))
    assert pipe.names == ["probe", "split", "filter", "caption", "transcode", "commit"]
    assert pipe.dataset_steps == []
    for stage in pipe.stages:
        assert stage.resources.cpus > 0 and stage.resources.batch_size >= 1
    dedup = build_pipeline(load_config(None, ["models.dedup.enabled=true", "models.dedup.semantic=false"]),
                           str(tmp_path))
    assert [s.name for s in dedup.dataset_steps] == ["dedup"]


class BrokenSetupStage(PipelineStep):
    name = "broken"

    def setup(self) -> None:
        raise OSError("weights not found at /nowhere")


def test_a_stage_that_cannot_set_up_stops_the_run_with_one_line():
    import pytest

    from curate.errors import CurateError

    with pytest.raises(CurateError, match="weights not found at /nowhere"):
        LocalExecutor(workers=1).run([BrokenSetupStage()], _tasks(["a"], {"yielded": 0}), lambda t: None)


def _pid_times(x: int) -> tuple[int, int]:
    if x == -1:
        raise KeyError("no such item")
    if x == -2:
        os._exit(3)
    return os.getpid(), x * 10


def test_map_runs_on_the_pipeline_workers_in_order():
    import pytest

    from curate.executors.local import WorkerDiedError

    ex = LocalExecutor(workers=2)
    try:
        results = []
        ex.run([TagStage(), DoneStage()], _tasks([f"v{i}" for i in range(4)], {"yielded": 0}), results.append)
        run_pids = {int(t.codec.split(":")[0]) for t in results}
        out = ex.map(_pid_times, list(range(7)))
        assert [v for _, v in out] == [i * 10 for i in range(7)]  # in order
        assert {pid for pid, _ in out} <= run_pids and os.getpid() not in run_pids  # the same processes
        with pytest.raises(KeyError, match="no such item"):  # fn's own exception, raised here
            ex.map(_pid_times, [1, -1, 2])
        with pytest.raises(WorkerDiedError, match="exit code 3"):
            ex.map(_pid_times, [-2])
        assert [v for _, v in ex.map(_pid_times, [5])] == [50]  # fresh workers after a death
    finally:
        ex.close()
    assert ex.map(_pid_times, []) == []
