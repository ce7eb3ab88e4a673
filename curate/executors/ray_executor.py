"""The Ray executor: the same stages, unchanged, as Ray actors on a local or remote Ray cluster.

Layout: the stage list is cut into segments of consecutive stages that want the same kind of device; each
segment gets a pool of actors (CPU segments: `workers` actors of one CPU each, spread over the nodes; GPU
segments: one actor per GPU, fed `Resources.batch_size` tasks per call). On a CPU-only machine the whole
pipeline is one segment, so each actor runs every stage on its source, as the local executor's workers do.

Backpressure: at most `max_in_flight` tasks (default 2 x workers) are between the input iterator and
`on_result`; the input is pulled lazily, so memory does not grow with the number of inputs.

Faults: actors are restartable and their calls retried (`max_restarts`, `max_task_retries`): when a worker
process dies mid-task, Ray starts a new actor (its stages' `setup()` again) and reruns the call on the same
task. Commit is an atomic rename of the task's work dir (curate.state), so a rerun after a death just before
or after the commit still leaves exactly one committed copy. A task that keeps killing its worker past the
retries is failed with the reason, as the local executor does.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from curate.errors import CurateError, OutputError
from curate.executors.base import ProgressFn
from curate.step import PipelineStep
from curate.task import SourceTask

T = TypeVar("T")
R = TypeVar("R")


def segments(stages: list[PipelineStep]) -> list[list[PipelineStep]]:
    """Consecutive stages grouped by whether they want a GPU."""
    out: list[list[PipelineStep]] = []
    for stage in stages:
        gpu = stage.resources.gpus > 0
        if out and (out[-1][0].resources.gpus > 0) == gpu:
            out[-1].append(stage)
        else:
            out.append([stage])
    return out


class _StageActor:
    """Runs one segment's stages on batches of tasks; `setup()` once per actor (re)start."""

    def __init__(self, stages: list[PipelineStep]):
        from curate.executors.local import _pin_threads

        _pin_threads()  # one compute thread per actor: the same numbers as the local executor's workers
        self.stages = stages
        for stage in self.stages:
            stage.setup()

    def pid(self) -> int:
        return os.getpid()

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        for stage in self.stages:
            batch = stage.process(batch)
        return batch


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


@dataclass
class RayExecutor:
    address: str | None = None  # None: join the Ray instance of this process, or start a local one
    workers: int = 2  # CPU actors
    max_in_flight: int | None = None
    max_retries: int = 3  # restarts of a dead actor and retries of the call it held
    start_timeout_s: float = 600.0  # actors not placed and set up by then: a clear error, not a hang

    _owns_ray: bool = False  # this executor started (or connected) Ray: close() shuts it down

    def _connect(self) -> bool:
        """Connect (or start) once; the connection lasts until close()."""
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray[data] is a dependency
            raise CurateError(f"--executor ray needs the ray package: {exc}") from None
        if ray.is_initialized():
            return False
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")]))}}
        try:
            if self.address:
                import curate
                import dataload

                # A remote cluster gets our packages shipped along (its nodes may not have them installed).
                ray.init(address=self.address, runtime_env={"py_modules": [curate, dataload]},
                         include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, self.workers), include_dashboard=False, runtime_env=env,
                         log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - connection errors come in many types
            raise CurateError(f"cannot start or reach Ray ({self.address or 'local'}): {' '.join(str(exc).split())[:200]}") from None
        self._owns_ray = True
        return True

    def run(self, stages: list[PipelineStep], tasks: Iterable[SourceTask], on_result: Callable[[SourceTask], None],
            on_stage: ProgressFn | None = None) -> None:
        import itertools

        import ray

        it = iter(tasks)
        first = next(it, None)
        if first is None:  # nothing to do (a finished run resumed): no cluster, no actors
            return
        tasks = itertools.chain([first], it)
        self._connect()
        segs = segments(stages)
        gpus_in_cluster = float(ray.cluster_resources().get("GPU", 0))
        Actor = ray.remote(_StageActor)
        pools: list[list] = []
        try:
            plans = []
            cpu_segments = sum(1 for seg in segs if max(s.resources.gpus for s in seg) == 0)
            for seg in segs:
                need_gpu = max(s.resources.gpus for s in seg)
                if need_gpu > 0:
                    if gpus_in_cluster < need_gpu:
                        raise CurateError(f"stages {[s.name for s in seg]} want a GPU but the Ray cluster has "
                                          f"{gpus_in_cluster:g}; set their device to cpu")
                    # GPU actors hold no CPU slot, so they never starve the CPU pool of a small machine
                    plans.append((int(gpus_in_cluster // need_gpu), dict(num_cpus=0, num_gpus=need_gpu),
                                  max(s.resources.batch_size for s in seg)))
                else:
                    # `workers` CPUs in all: CPU segments on either side of a GPU segment take turns on a
                    # source, so their actors share the slots; never more actors than the cluster can place
                    n = max(1, min(self.workers, int(ray.cluster_resources().get("CPU", 1))))
                    plans.append((n, dict(num_cpus=1.0 / cpu_segments, scheduling_strategy="SPREAD"), 1))

            def make_actor(i: int):
                return Actor.options(max_restarts=self.max_retries, max_task_retries=self.max_retries,
                                     **plans[i][1]).remote(segs[i])

            for i in range(len(segs)):
                pools.append([make_actor(i) for _ in range(plans[i][0])])
            try:  # surface a stage whose setup() fails (a bad model path) as one clear line, up front
                ray.get([a.pid.remote() for pool in pools for a in pool], timeout=self.start_timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise CurateError(f"the Ray cluster could not start the actors within {self.start_timeout_s:g} s "
                                  f"(need {[p[0] for p in plans]} actors with {[p[1] for p in plans]})") from None
            except ray.exceptions.RayError as exc:
                raise CurateError(f"a Ray worker could not start its stages: {_root_cause(exc)}") from None
            self._drive(pools, [p[2] for p in plans], segs, make_actor, tasks, on_result, on_stage)
        finally:
            for pool in pools:
                for actor in pool:
                    ray.kill(actor, no_restart=True)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items`` as Ray tasks (one CPU each, spread over the nodes, retried on a dead
        worker), results in order; the exception of a task that fails is raised here."""
        items = list(items)
        if not items:
            return []
        import ray
        from ray.exceptions import RayError, RayTaskError

        self._connect()
        remote = ray.remote(fn).options(num_cpus=1, max_retries=self.max_retries, scheduling_strategy="SPREAD")
        try:
            return ray.get([remote.remote(x) for x in items])
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise RuntimeError(f"a Ray task failed: {_root_cause(exc)}") from None
        except RayError as exc:
            raise RuntimeError(f"a Ray task failed: {_root_cause(exc)}") from None

    def close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    def _drive(self, pools, batch_sizes, segs, make_actor, tasks, on_result, on_stage) -> None:
        import ray
        from ray.exceptions import RayError

        limit = self.max_in_flight or 2 * max(1, self.workers)
        it = iter(tasks)
        exhausted = False
        waiting: list[deque[SourceTask]] = [deque() for _ in segs]  # ready for segment i, not yet sent
        idle: list[deque] = [deque(pool) for pool in pools]
        running: dict = {}  # ref -> (segment index, actor, batch)
        resent: dict[str, int] = {}  # source key -> times its batch was sent again after a lost actor
        in_flight = 0

        while True:
            while not exhausted and in_flight < limit:
                task = next(it, None)
                if task is None:
                    exhausted = True
                    break
                in_flight += 1
                waiting[0].append(task)
            # Dispatch full batches; a partial one only when nothing upstream could still fill it (after the
            # fill above, the input can only grow once something finishes).
            for i, queue in enumerate(waiting):
                can_grow = any(s < i for s, _, _ in running.values()) or any(waiting[:i])
                while queue and idle[i] and (len(queue) >= batch_sizes[i] or not can_grow):
                    batch = [queue.popleft() for _ in range(min(batch_sizes[i], len(queue)))]
                    actor = idle[i].popleft()
                    running[actor.process.remote(batch)] = (i, actor, batch)
            if not running:
                if exhausted and in_flight == 0:
                    return
                raise RuntimeError("ray executor stalled with tasks waiting and no work running")
            (ref,), _ = ray.wait(list(running), num_returns=1)
            i, actor, sent = running.pop(ref)
            try:
                batch = ray.get(ref)
            except RayError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, OutputError):  # OUT is full or read-only: stop the run, as the local one does
                    raise OutputError(str(cause)) from None
                if isinstance(exc, ray.exceptions.RayActorError):
                    # the actor's process or its whole node is gone (its own retries can run out before the
                    # cluster notices a dead node): a fresh actor takes its place, wherever there is room
                    ray.kill(actor, no_restart=True)
                    actor = make_actor(i)
                    if all(resent.get(t.key, 0) < self.max_retries for t in sent):
                        for t in sent:  # the batch as sent: its tasks start this segment again
                            resent[t.key] = resent.get(t.key, 0) + 1
                        waiting[i].extendleft(reversed(sent))
                        idle[i].append(actor)
                        continue
                # Past the retries: fail these sources with the reason, as a dead local worker does. Failed
                # tasks still go through the rest of the stages, so the commit stage records them.
                reason = f"worker died while processing it ({_root_cause(exc)})"
                for task in sent:
                    task.fail(reason[:300])
                batch = sent
            idle[i].append(actor)
            if on_stage is not None:
                for stage in segs[i]:
                    on_stage(stage.name, len(batch))
            if i + 1 < len(segs):
                waiting[i + 1].extend(batch)  # inactive tasks too: stages pass them on, commit records them
            else:
                for task in batch:
                    in_flight -= 1
                    on_result(task)


def _root_cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("CurateError: ", "Error: "):
        if marker in text:
            text = text.split(marker)[-1]
    return text[:200] or type(exc).__name__
