"""Start the ranks of a job: under torchrun (env vars set), or `--nproc N` local gloo ranks spawned here.

`launch(fn, nproc, kwargs)` runs fn(rank, world_size, **kwargs) on every rank with the default process
group initialised, and returns 0 when all ranks succeeded. A rank's failure is reported once, as one
line, and gives a non-zero status; the other ranks fail at their next collective within the timeout
and the parent kills whatever is still alive, so nothing hangs.
"""

from __future__ import annotations

import datetime
import os
import queue as queue_mod
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PG_TIMEOUT_S = 120


class UserError(Exception):
    """Bad input found inside a rank: reported as one line, never a traceback."""


class RankError(RuntimeError):
    """A rank failed with something other than bad input; the message is its one-line summary."""


def quiet_progress_unless_tty() -> None:
    """Progress bars only on a terminal: hub/transformers bars read this variable (children inherit it)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def backend_for_device() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def _init(rank: int, world_size: int, init_method: str | None, backend: str) -> None:
    kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=PG_TIMEOUT_S)}
    if init_method is not None:
        kwargs.update(init_method=init_method, rank=rank, world_size=world_size)
    dist.init_process_group(backend, **kwargs)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _rank_main(rank, world_size, init_method, backend, fn, kwargs, result_queue, threads):
    if threads:
        torch.set_num_threads(threads)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    try:
        _init(rank, world_size, init_method, backend)
        fn(rank, world_size, **kwargs)
        result_queue.put((rank, "ok", ""))
    except BaseException as exc:  # every failure goes back to the parent as text
        detail = "" if isinstance(exc, UserError) else traceback.format_exc()
        result_queue.put((rank, "error", _one_line(exc) + ("\n" + detail if detail else "")))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def launch(fn: Callable[..., Any], nproc: int, kwargs: dict | None = None, *,
           threads: int | None = None, verbose_errors: bool = False) -> int:
    """Run fn on nproc ranks (or on the torchrun-provided ranks); returns 0 when all succeeded.

    A failure raises UserError (bad input found in a rank) or RankError, with the first rank's message."""
    kwargs = kwargs or {}
    backend = backend_for_device()
    if under_torchrun():
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        try:
            _init(rank, world, None, backend)
            fn(rank, world, **kwargs)
            return 0
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    ctx = mp.get_context("spawn")
    result_queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="vfm-launch-") as tmp:
        init_method = f"file://{os.path.join(tmp, 'pg')}"
        if nproc == 1:
            # same code path as many ranks, without a second process
            class _Q:
                def __init__(self):
                    self.items = []

                def put(self, item):
                    self.items.append(item)
            q = _Q()
            _rank_main(0, 1, init_method, backend, fn, kwargs, q, threads)
            results = {r: (s, m) for r, s, m in q.items}
            procs = []
        else:
            procs = [ctx.Process(target=_rank_main, daemon=False,
                                 args=(r, nproc, init_method, backend, fn, kwargs, result_queue,
                                       threads if threads is not None else max(1, (os.cpu_count() or 1) // nproc)))
                     for r in range(nproc)]
            for p in procs:
                p.start()
            results = {}
            deadline = None
            while len(results) < nproc:
                try:
                    rank, status, msg = result_queue.get(timeout=1.0)
                    results[rank] = (status, msg)
                    if status == "error" and deadline is None:
                        deadline = time.monotonic() + PG_TIMEOUT_S + 10
                except queue_mod.Empty:
                    for r, p in enumerate(procs):
                        if r not in results and not p.is_alive():
                            results[r] = ("error", f"rank {r} exited with code {p.exitcode}")
                if deadline is not None and time.monotonic() > deadline:
                    break
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
    errors = sorted((r, m) for r, (s, m) in results.items() if s == "error")
    if not errors:
        return 0
    # the root cause: a rank's own bad-input line first, else the lowest rank that raised (the others
    # usually only report the collective that broke under them)
    user = [(r, m) for r, m in errors if "\n" not in m]
    raised = [(r, m) for r, m in errors if "exited with code" not in m]
    rank, msg = (user or raised or errors)[0]
    head, _, detail = msg.partition("\n")
    if verbose_errors and detail:
        print(detail, file=sys.stderr)
    if user:
        raise UserError(head)
    raise RankError(f"rank {rank}: {head}")
