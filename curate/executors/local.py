"""The local executor: N worker processes, each running every stage on one source at a time.

Why whole-source workers instead of one process per stage: a source's frames are decoded by several
stages, and moving clips between processes would cost more than it saves on a laptop; N workers over
independent sources keep N cores busy. Streaming and flat memory: at most `workers` tasks are ever in flight
(each worker's queue holds one task, fed lazily from the input iterator), and results are handed to `on_result` as they
arrive, so nothing grows with the number of inputs. A worker that dies (a decoder crash, the OOM killer)
fails only the source it held; a fresh worker takes its place.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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


def _pool_worker(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _pin_threads()


def _worker(wid: int, stages: list[PipelineStep], in_q, out_q, parent: int | None = None) -> None:
    # Ctrl-C reaches the whole process group: the driver alone answers it (stops the workers, exit 130);
    # a worker ignores it, so no worker prints a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    _pin_threads()
    try:
        for stage in stages:
            stage.setup()
    except Exception as exc:  # noqa: BLE001 - reported to the driver as one line
        out_q.put(("fatal", wid, f"{type(exc).__name__}: {exc}"))
        return
    try:
        while True:
            task = in_q.get()
            if task is None:
                break
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
        for stage in stages:
            try:
                stage.teardown()
            except Exception:  # noqa: BLE001,S110 - teardown must not hide the real result
                pass


def _block_sigint() -> bool:
    if not hasattr(signal, "pthread_sigmask"):
        return False
    return signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class WorkerSetupError(CurateError):
    """The stages cannot start (a model that does not load, a missing program): the run cannot run."""


@dataclass
class LocalExecutor:
    workers: int = 2
    start_method: str = "spawn"  # spawn: safe with threaded libraries (torch, OpenCV) in the parent
    max_worker_deaths_without_progress: int = 3

    def run(self, stages: list[PipelineStep], tasks: Iterable[SourceTask], on_result: Callable[[SourceTask], None],
            on_stage: ProgressFn | None = None) -> None:
        """Run every task through `stages`; call `on_result(task)` in this process as each one finishes.

        Each worker holds at most one task, handed to it on its own queue, so the driver always knows
        which source a dead worker took with it (messages a killed process had queued may be lost)."""
        if self.workers <= 0:
            self._run_inline(stages, tasks, on_result, on_stage)
            return
        ctx = mp.get_context(self.start_method)
        out_q = ctx.Queue()
        procs: dict[int, tuple] = {}  # wid -> (process, its input queue)
        assigned: dict[int, SourceTask] = {}
        idle: list[int] = []
        next_wid = 0
        deaths_in_a_row = 0

        def start_worker() -> None:
            nonlocal next_wid
            in_q = ctx.Queue(maxsize=1)
            p = ctx.Process(target=_worker, args=(next_wid, stages, in_q, out_q, os.getpid()), daemon=True,
                            name=f"vfm-curate-worker-{next_wid}")
            # SIGINT stays blocked while the worker starts (it inherits the mask), so a Ctrl-C during its
            # imports cannot print a traceback; the driver gets a signal that arrived meanwhile right after.
            blocked = _block_sigint()
            try:
                p.start()
            finally:
                if blocked:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            procs[next_wid] = (p, in_q)
            idle.append(next_wid)
            next_wid += 1

        it: Iterator[SourceTask] = iter(tasks)
        exhausted = False
        finished = False
        try:
            for _ in range(self.workers):
                start_worker()
            while True:
                while idle and not exhausted:
                    task = next(it, None)
                    if task is None:
                        exhausted = True
                        break
                    wid = idle.pop(0)
                    assigned[wid] = task
                    procs[wid][1].put(task)
                if exhausted and not assigned:
                    break
                try:
                    kind, wid, payload = out_q.get(timeout=0.5)
                except queue.Empty:
                    for wid in [w for w, (p, _) in procs.items() if not p.is_alive()]:
                        p, _ = procs.pop(wid)
                        task = assigned.pop(wid, None)
                        if wid in idle:
                            idle.remove(wid)
                        if task is not None:
                            deaths_in_a_row = 0
                            task.fail(f"worker died while processing it (exit code {p.exitcode})")
                            on_result(task)
                        else:
                            deaths_in_a_row += 1
                            if deaths_in_a_row >= self.max_worker_deaths_without_progress:
                                raise WorkerSetupError(
                                    f"workers keep dying before taking work (exit code {p.exitcode})") from None
                        start_worker()
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
            self._stop(procs, out_q, graceful=finished)

    @staticmethod
    def _stop(procs: dict[int, tuple], out_q, graceful: bool) -> None:
        """End every worker: at the end of the work, ask them to finish (5 s at most); when the run stops
        early (Ctrl-C, a full disk, an error), kill them at once: their sources were not committed, and
        the rerun redoes exactly those."""
        if graceful:
            for _p, in_q in procs.values():
                try:
                    in_q.put_nowait(None)
                except queue.Full:
                    pass
        deadline = time.monotonic() + (5 if graceful else 0)
        for p, _ in procs.values():
            if graceful:
                p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
            p.join()
        for _p, in_q in procs.values():
            in_q.cancel_join_thread()  # never wait at exit on a pipe that no worker reads any more
            in_q.close()
        out_q.cancel_join_thread()
        out_q.close()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items`` in worker processes (at most ``workers``; in this process with 0 workers),
        results in order. A worker ignores Ctrl-C (the driver answers it) and dies with the driver."""
        items = list(items)
        if self.workers <= 0 or not items:
            return [fn(x) for x in items]
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context(self.start_method)
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=ctx,
                                 initializer=_pool_worker, initargs=(os.getpid(),)) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        """Nothing outlives a call."""

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
