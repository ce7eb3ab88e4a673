"""Start the ranks of a job: under torchrun (env vars set), or `--nproc N` local gloo ranks spawned here.

`launch(fn, nproc, kwargs)` runs fn(rank, world_size, **kwargs) on every rank with the default process
group initialised, and returns 0 when all ranks succeeded. A rank's failure is reported once, as one
line, and gives a non-zero status; the other ranks fail at their next collective within the timeout
and the parent kills whatever is still alive, so nothing hangs.

Errors keep their meaning across the process boundary: bad input found in a rank (diffusion.errors'
`user_message`) is raised in the parent as a UserError with the rank's own line; anything else as a
RankError. Spawned ranks ignore SIGINT: on Ctrl-C the parent stops them and raises KeyboardInterrupt,
so the user sees one line instead of a traceback per rank.
"""

from __future__ import annotations

import datetime
import os
import queue as queue_mod
import signal
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

from diffusion.errors import UserError, user_message

PG_TIMEOUT_S = 120


class RankError(RuntimeError):
    """A rank failed with something other than bad input; the message is its one-line summary."""


def quiet_progress_unless_tty() -> None:
    """Progress bars only on a terminal: hub/transformers bars read this variable (children inherit it)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def backend_for_device() -> str:
    from parallel.device import backend

    return backend()


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def _init(rank: int, world_size: int, init_method: str | None, backend: str) -> None:
    import torch.distributed as dist  # torch only where ranks start: --help stays fast

    if backend == "gloo":  # a CPU rank: freed weights and gathered shards go back to the system
        from parallel.host_memory import map_large_blocks

        map_large_blocks()
    kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=PG_TIMEOUT_S)}
    if init_method is not None:
        kwargs.update(init_method=init_method, rank=rank, world_size=world_size)
    dist.init_process_group(backend, **kwargs)


# what every rank imports anyway: a fork server imports it once, and each rank forks from it ready to run
# (a spawned rank pays seconds of imports; the server never runs an op, so it holds no threads to fork)
_PRELOAD = ["torch", "torch.distributed.checkpoint", "diffusion.fit", "diffusion.generate", "diffusion.encoders"]


def rank_context():
    """The multiprocessing context that starts ranks: a fork server with our modules preloaded (Linux),
    else spawn."""
    import multiprocessing

    import torch.multiprocessing as mp

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _rank_main(rank, world_size, init_method, backend, fn, kwargs, result_queue, threads, spawned=False,
               env=None):
    if spawned:  # the parent handles Ctrl-C for the whole job
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch
    import torch.distributed as dist

    if threads:
        torch.set_num_threads(threads)
    if env is not None:  # the launcher's environment now (a fork server holds the one it started with)
        os.environ.clear()
        os.environ.update(env)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    try:
        _init(rank, world_size, init_method, backend)
        fn(rank, world_size, **kwargs)
        result_queue.put((rank, "ok", ""))
    except KeyboardInterrupt:
        result_queue.put((rank, "interrupted", ""))
    except BaseException as exc:  # every failure goes back to the parent as text
        message = user_message(exc) if isinstance(exc, Exception) else None
        if message is not None:
            result_queue.put((rank, "user", message))
        else:
            text = " ".join(str(exc).split())
            result_queue.put((rank, "error", f"{type(exc).__name__}: {text}\n{traceback.format_exc()}"))
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
    import torch.distributed as dist

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
    ctx = rank_context()
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
            return _outcome({r: (s, m) for r, s, m in q.items}, verbose_errors)
        procs = [ctx.Process(target=_rank_main, daemon=False,
                             args=(r, nproc, init_method, backend, fn, kwargs, result_queue,
                                   threads if threads is not None else max(1, (os.cpu_count() or 1) // nproc),
                                   True, dict(os.environ)))
                 for r in range(nproc)]
        try:
            for p in procs:
                p.start()
            results = _collect(procs, result_queue)
        except KeyboardInterrupt:
            _stop(procs, grace_s=0)
            raise
        _stop(procs, grace_s=10)
    return _outcome(results, verbose_errors)


def _collect(procs, result_queue) -> dict[int, tuple[str, str]]:
    """Each rank's (status, message); after a first failure the others get the collective timeout."""
    nproc = len(procs)
    results: dict[int, tuple[str, str]] = {}
    deadline = None
    while len(results) < nproc:
        try:
            rank, status, msg = result_queue.get(timeout=1.0)
            results[rank] = (status, msg)
            if status != "ok" and deadline is None:
                deadline = time.monotonic() + PG_TIMEOUT_S + 10
        except queue_mod.Empty:
            for r, p in enumerate(procs):
                if r not in results and not p.is_alive():
                    results[r] = ("error", f"rank {r} exited with code {p.exitcode}")
        if deadline is not None and time.monotonic() > deadline:
            break
    return results


def _stop(procs, grace_s: float) -> None:
    """Join the ranks; whatever is still alive after the grace period is terminated, then killed."""
    end = time.monotonic() + grace_s
    for p in procs:
        if p.pid is not None:
            p.join(timeout=max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is not None:
            p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join()


def _outcome(results: dict[int, tuple[str, str]], verbose_errors: bool) -> int:
    if any(s == "interrupted" for s, _ in results.values()):
        raise KeyboardInterrupt
    failed = sorted((r, s, m) for r, (s, m) in results.items() if s != "ok")
    if not failed:
        return 0
    # the root cause: a rank's own bad-input line first, else the lowest rank that raised (the others
    # usually only report the collective that broke under them)
    user = [(r, m) for r, s, m in failed if s == "user"]
    if user:
        raise UserError(user[0][1])
    raised = [(r, m) for r, s, m in failed if "exited with code" not in m]
    rank, msg = (raised or [(r, m) for r, _, m in failed])[0]
    head, _, detail = msg.partition("\n")
    if verbose_errors and detail:
        print(detail, file=sys.stderr)
    raise RankError(f"rank {rank}: {head}")
