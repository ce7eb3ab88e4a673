"""The local executor: N worker processes, each running every stage on one source at a time.

Why whole-source workers instead of one process per stage: a source's frames are decoded by several
stages, and moving clips between processes would cost more than it saves on a laptop; N workers over
independent sources keep N cores busy. Streaming and flat memory: at most `workers` tasks are ever in flight
(each worker's queue holds one task, fed lazily from the input iterator), and results are handed to `on_result` as they
arrive, so nothing grows with the number of inputs. A worker that dies (a decoder crash, the OOM killer)
fails only the source it held; a fresh worker takes its place. The workers live until `close()`: the
jobs after the pipeline (`map`: the run's shards) go to the same processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from curate.errors import CurateError, OutputError
from curate.executors.base import ProgressFn
from curate.step import PipelineStep, one_line
from curate.task import SourceTask

T = TypeVar("T")
R = TypeVar("R")

# Events a worker sends back: ("stage", wid, stage name) | ("result", wid, task) | ("fatal", wid, message)
# | ("output", wid, message): OUT cannot be written (a full or read-only disk), the run stops


def _pin_threads() -> None:
    """One compute thread per worker process: N workers share N cores without oversubscription.
    (Libraries imported later read OMP_NUM_THREADS; those the stages already imported are told.)"""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def run_stages(stages: list[PipelineStep], task: SourceTask, on_stage: Callable[[str], None] | None = None) -> SourceTask:
    batch = [task]
    for stage in stages:
        batch = stage.process(batch)
        if on_stage is not None:
            on_stage(stage.name)
    return batch[0]


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this worker when the driver dies (Linux: PR_SET_PDEATHSIG), so a driver
    killed with -9 leaves no orphan that would go on writing into OUT under the next run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the driver's kill on the way out still applies
        pass
    if os.getppid() != parent:  # the driver died before the request took effect
        os._exit(1)


def _teardown(stages: list[PipelineStep]) -> None:
    for stage in stages:
        try:
            stage.teardown()
        except Exception:  # noqa: BLE001,S110 - teardown must not hide the real result
            pass


def _picklable(exc: Exception) -> Exception:
    """`exc` itself when it crosses a process boundary intact, else a RuntimeError with its text (the
    queue pickles in a background thread, where a failure would be lost)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {one_line(exc)}")


def _worker(wid: int, in_q, out_q, parent: int | None = None) -> None:
    """A worker's loop. Messages: ("stages", list) sets the pipeline up (the previous one torn down),
    ("task", task) runs it through the pipeline, ("call", fn, item) runs fn(item), None ends the worker."""
    # Ctrl-C reaches the whole process group: the driver alone answers it (stops the workers, exit 130);
    # a worker ignores it, so no worker prints a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    _pin_threads()
    stages: list[PipelineStep] = []
    try:
        while True:
            msg = in_q.get()
            if msg is None:
                break
            if msg[0] == "stages":
                _teardown(stages)
                stages = msg[1]
                try:
                    for stage in stages:
                        stage.setup()
                except Exception as exc:  # noqa: BLE001 - reported to the driver as one line
                    out_q.put(("fatal", wid, f"{type(exc).__name__}: {exc}"))
                    return
            elif msg[0] == "call":
                try:
                    out_q.put(("called", wid, (True, msg[1](msg[2]))))
                except Exception as exc:  # noqa: BLE001 - raised again in the driver
                    out_q.put(("called", wid, (False, _picklable(exc))))
            else:
                task = msg[1]
                try:
                    done = run_stages(stages, task, lambda name: out_q.put(("stage", wid, name)))
                except OutputError as exc:  # OUT is full or read-only: the driver stops the run
                    out_q.put(("output", wid, str(exc)))
                    break
                except Exception as exc:  # noqa: BLE001 - a stage bug fails its source, not the worker
                    task.fail(f"{type(exc).__name__}: {one_line(exc)}")
                    done = task
                out_q.put(("result", wid, done))
    finally:
        _teardown(stages)


def _block_sigint() -> bool:
    if not hasattr(signal, "pthread_sigmask"):
        return False
    return signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class WorkerSetupError(CurateError):
    """The stages cannot start (a model that does not load, a missing program): the run cannot run."""


class WorkerDiedError(CurateError):
    """A worker died while running a `map` job (its work is lost; the caller decides what that means)."""


@dataclass
class _Worker:
    proc: object
    in_q: object


@dataclass
class LocalExecutor:
    """Worker processes that live from the first `run` or `map` to `close()`: the shards of a run are
    written by the processes that curated it, with no second start-up (about 0.2 s a pool)."""

    workers: int = 2
    start_method: str = "spawn"  # spawn: safe with threaded libraries (torch, OpenCV) in the parent
    max_worker_deaths_without_progress: int = 3
    _pool: dict[int, _Worker] = field(default_factory=dict, init=False, repr=False)
    _out_q: object = field(default=None, init=False, repr=False)
    _next_wid: int = field(default=0, init=False, repr=False)

    def _start_worker(self) -> int:
        ctx = mp.get_context(self.start_method)
        if self._out_q is None:
            self._out_q = ctx.Queue()
        wid = self._next_wid
        self._next_wid += 1
        in_q = ctx.Queue(maxsize=2)  # its pipeline and the one task or call it holds
        p = ctx.Process(target=_worker, args=(wid, in_q, self._out_q, os.getpid()), daemon=True,
                        name=f"vfm-curate-worker-{wid}")
        # SIGINT stays blocked while the worker starts (it inherits the mask), so a Ctrl-C during its
        # imports cannot print a traceback; the driver gets a signal that arrived meanwhile right after.
        blocked = _block_sigint()
        try:
            p.start()
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        self._pool[wid] = _Worker(p, in_q)
        return wid

    def _workers(self, n: int) -> list[int]:
        """At least `n` live workers; returns the ids of `n` of them."""
        while len(self._pool) < n:
            self._start_worker()
        return sorted(self._pool)[:n]

    def _dead(self) -> list[int]:
        return [w for w, worker in self._pool.items() if not worker.proc.is_alive()]

    def run(self, stages: list[PipelineStep], tasks: Iterable[SourceTask], on_result: Callable[[SourceTask], None],
            on_stage: ProgressFn | None = None) -> None:
        """Run every task through `stages`; call `on_result(task)` in this process as each one finishes.

        Each worker holds at most one task, handed to it on its own queue, so the driver always knows
        which source a dead worker took with it (messages a killed process had queued may be lost)."""
        if self.workers <= 0:
            self._run_inline(stages, tasks, on_result, on_stage)
            return
        assigned: dict[int, SourceTask] = {}
        deaths_in_a_row = 0
        finished = False
        try:
            idle = self._workers(self.workers)
            for wid in idle:
                self._pool[wid].in_q.put(("stages", stages))
            it: Iterator[SourceTask] = iter(tasks)
            exhausted = False
            while True:
                while idle and not exhausted:
                    task = next(it, None)
                    if task is None:
                        exhausted = True
                        break
                    wid = idle.pop(0)
                    assigned[wid] = task
                    self._pool[wid].in_q.put(("task", task))
                if exhausted and not assigned:
                    break
                try:
                    kind, wid, payload = self._out_q.get(timeout=0.5)
                except queue.Empty:
                    for wid in self._dead():
                        code = self._pool.pop(wid).proc.exitcode
                        task = assigned.pop(wid, None)
                        if wid in idle:
                            idle.remove(wid)
                        if task is not None:
                            deaths_in_a_row = 0
                            task.fail(f"worker died while processing it (exit code {code})")
                            on_result(task)
                        else:
                            deaths_in_a_row += 1
                            if deaths_in_a_row >= self.max_worker_deaths_without_progress:
                                raise WorkerSetupError(
                                    f"workers keep dying before taking work (exit code {code})") from None
                        fresh = self._start_worker()
                        self._pool[fresh].in_q.put(("stages", stages))
                        idle.append(fresh)
                    continue
                if kind == "stage":
                    if on_stage is not None:
                        on_stage(payload, 1)
                elif kind == "result":
                    held = assigned.get(wid)
                    if held is not None and held.index == payload.index:
                        del assigned[wid]
                        idle.append(wid)
                        deaths_in_a_row = 0
                        on_result(payload)
                elif kind == "fatal":
                    raise WorkerSetupError(f"a worker could not set up its stages: {payload}")
                elif kind == "output":
                    raise OutputError(payload)
            finished = True
        finally:
            if not finished:
                self._stop(graceful=False)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items`` on the workers (at most ``workers``; in this process with 0 workers), results
        in order; an exception of ``fn`` is raised here, a worker that dies raises WorkerDiedError."""
        items = list(items)
        if self.workers <= 0 or not items:
            return [fn(x) for x in items]
        results: list = [None] * len(items)
        held: dict[int, int] = {}  # worker -> index of the item it holds
        todo = list(range(len(items)))
        finished = False
        try:
            idle = self._workers(min(self.workers, len(items)))
            while todo or held:
                while idle and todo:
                    wid, i = idle.pop(0), todo.pop(0)
                    held[wid] = i
                    self._pool[wid].in_q.put(("call", fn, items[i]))
                try:
                    kind, wid, payload = self._out_q.get(timeout=0.5)
                except queue.Empty:
                    dead = [w for w in self._dead() if w in held]
                    if dead:
                        code = self._pool[dead[0]].proc.exitcode
                        raise WorkerDiedError(f"a worker died while running {getattr(fn, '__name__', 'a job')} "
                                              f"(exit code {code})") from None
                    continue
                if kind != "called" or wid not in held:
                    continue
                ok, value = payload
                if not ok:
                    raise value
                results[held.pop(wid)] = value
                idle.append(wid)
            finished = True
            return results
        finally:
            if not finished:
                self._stop(graceful=False)

    def _stop(self, graceful: bool) -> None:
        """End every worker: after the work, ask them to finish (5 s at most); when a run stops early
        (Ctrl-C, a full disk, an error), kill them at once: their sources were not committed, and the
        rerun redoes exactly those."""
        pool, self._pool = self._pool, {}
        if graceful:
            for worker in pool.values():
                try:
                    worker.in_q.put_nowait(None)
                except queue.Full:
                    pass
        deadline = time.monotonic() + (5 if graceful else 0)
        for worker in pool.values():
            if graceful:
                worker.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.proc.is_alive():
                worker.proc.kill()
            worker.proc.join()
        for worker in pool.values():
            worker.in_q.cancel_join_thread()  # never wait at exit on a pipe that no worker reads any more
            worker.in_q.close()
        if self._out_q is not None:
            self._out_q.cancel_join_thread()
            self._out_q.close()
            self._out_q = None

    def close(self) -> None:
        """Stop the workers (each tears its stages down)."""
        self._stop(graceful=True)

    @staticmethod
    def _run_inline(stages, tasks, on_result, on_stage) -> None:
        for stage in stages:
            stage.setup()
        try:
            for task in tasks:
                on_result(run_stages(stages, task, (lambda n: on_stage(n, 1)) if on_stage else None))
        finally:
            for stage in stages:
                stage.teardown()
