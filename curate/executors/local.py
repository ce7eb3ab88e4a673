"""The local executor: N worker processes, each running every stage on one source at a time.

Why whole-source workers instead of one process per stage: a source's frames are decoded by several
stages, and moving clips between processes would cost more than it saves on a laptop; N workers over
independent sources keep N cores busy. Streaming and flat memory: at most `2 * workers` tasks are ever in
flight (a bounded queue fed lazily from the input iterator), and results are handed to `on_result` as they
arrive, so nothing grows with the number of inputs. A worker that dies (a decoder crash, the OOM killer)
fails only the source it held; a fresh worker takes its place.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from curate.stage import SourceTask, Stage

# Events a worker sends back: ("started", wid, index) | ("stage", wid, stage name) |
# ("result", wid, task) | ("fatal", wid, message)
ProgressFn = Callable[[str, int], None]


def _pin_threads() -> None:
    """One compute thread per worker process: N workers share N cores without oversubscription."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def run_stages(stages: list[Stage], task: SourceTask, on_stage: Callable[[str], None] | None = None) -> SourceTask:
    batch = [task]
    for stage in stages:
        batch = stage.process(batch)
        if on_stage is not None:
            on_stage(stage.name)
    return batch[0]


def _worker(wid: int, stages: list[Stage], in_q, out_q) -> None:
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
            out_q.put(("started", wid, task.index))
            done = run_stages(stages, task, lambda name: out_q.put(("stage", wid, name)))
            out_q.put(("result", wid, done))
    finally:
        for stage in stages:
            try:
                stage.teardown()
            except Exception:  # noqa: BLE001,S110 - teardown must not hide the real result
                pass


class WorkerSetupError(RuntimeError):
    pass


@dataclass
class LocalExecutor:
    workers: int = 2
    start_method: str = "spawn"  # spawn: safe with threaded libraries (torch, OpenCV) in the parent
    max_in_flight: int | None = None

    def run(self, stages: list[Stage], tasks: Iterable[SourceTask], on_result: Callable[[SourceTask], None],
            on_stage: ProgressFn | None = None) -> None:
        """Run every task through `stages`; call `on_result(task)` in this process as each one finishes."""
        if self.workers <= 0:
            self._run_inline(stages, tasks, on_result, on_stage)
            return
        ctx = mp.get_context(self.start_method)
        limit = self.max_in_flight or 2 * self.workers
        in_q = ctx.Queue(maxsize=limit)
        out_q = ctx.Queue()
        procs: dict[int, mp.process.BaseProcess] = {}
        holding: dict[int, SourceTask] = {}  # worker id -> the task it is running (to fail it if it dies)
        pending: dict[int, SourceTask] = {}  # task index -> task sent but not yet returned
        next_wid = 0

        def start_worker() -> None:
            nonlocal next_wid
            p = ctx.Process(target=_worker, args=(next_wid, stages, in_q, out_q), daemon=True,
                            name=f"vfm-curate-worker-{next_wid}")
            p.start()
            procs[next_wid] = p
            next_wid += 1

        it: Iterator[SourceTask] = iter(tasks)
        exhausted = False
        try:
            for _ in range(self.workers):
                start_worker()
            while True:
                while not exhausted and len(pending) < limit:
                    task = next(it, None)
                    if task is None:
                        exhausted = True
                        break
                    pending[task.index] = task
                    in_q.put(task)
                if exhausted and not pending:
                    break
                try:
                    kind, wid, payload = out_q.get(timeout=0.5)
                except queue.Empty:
                    self._reap(procs, holding, pending, on_result, start_worker)
                    continue
                if kind == "started":
                    holding[wid] = pending[payload]
                elif kind == "stage":
                    if on_stage is not None:
                        on_stage(payload, 1)
                elif kind == "result":
                    holding.pop(wid, None)
                    pending.pop(payload.index, None)
                    on_result(payload)
                elif kind == "fatal":
                    raise WorkerSetupError(f"a worker could not start its stages: {payload}")
        finally:
            for _ in procs:
                try:
                    in_q.put_nowait(None)
                except queue.Full:
                    break
            deadline = time.monotonic() + 5
            for p in procs.values():
                p.join(timeout=max(0.1, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join()

    @staticmethod
    def _reap(procs, holding, pending, on_result, start_worker) -> None:
        """Fail the source of any worker that died, and replace the worker."""
        for wid, p in list(procs.items()):
            if p.is_alive():
                continue
            del procs[wid]
            task = holding.pop(wid, None)
            if task is not None:
                pending.pop(task.index, None)
                task.fail(f"worker died while processing it (exit code {p.exitcode})")
                on_result(task)
            start_worker()

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
