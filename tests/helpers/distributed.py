"""Spawn N real gloo ranks in fresh processes and collect every rank's failure without hanging.

Usage:
    def body(rank, world_size, **kwargs): ...      # module-level function (it is pickled by spawn)
    run_ranks(body, world_size=4, kwargs={...})     # raises RankFailure naming each failed rank

The process group is initialised before `body` runs (gloo, file store, 60 s timeout) and destroyed after.
A rank that raises makes the others fail at their next collective within the timeout, and the parent kills
whatever is still alive after `deadline_s`, so a test never hangs.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import traceback
from typing import Any, Callable

PG_TIMEOUT_S = 60


class RankFailure(AssertionError):
    pass


def _worker(rank, world_size, init_file, fn, kwargs, queue, threads, env):
    import torch
    import torch.distributed as dist

    os.environ.clear()  # the test's environment now, not the one the fork server started with
    os.environ.update(env)
    torch.set_num_threads(threads)
    os.environ["RANK"] = str(rank)
    os.environ["WORLD_SIZE"] = str(world_size)
    os.environ["LOCAL_RANK"] = str(rank)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=PG_TIMEOUT_S),
        )
        result = fn(rank, world_size, **kwargs)
        queue.put((rank, "ok", result))
    except BaseException as exc:  # report everything, including assertion errors
        queue.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass


def run_ranks(fn: Callable[..., Any], world_size: int, kwargs: dict | None = None,
              deadline_s: float = 3 * PG_TIMEOUT_S, threads: int = 1) -> list[Any]:
    """Run fn(rank, world_size, **kwargs) on world_size gloo ranks; return each rank's result, in order."""
    from diffusion.launch import rank_context  # a fork server with the heavy imports done once

    ctx = rank_context()
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "pg_init")
        procs = [
            ctx.Process(target=_worker, args=(r, world_size, init_file, fn, kwargs or {}, queue, threads,
                                              dict(os.environ)),
                        daemon=True)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        results: dict[int, tuple[str, Any]] = {}
        import queue as queue_mod
        import time

        end = time.monotonic() + deadline_s
        while len(results) < world_size and time.monotonic() < end:
            try:
                rank, status, payload = queue.get(timeout=1.0)
                results[rank] = (status, payload)
            except queue_mod.Empty:
                # a rank that died without reporting (segfault, kill) counts as failed
                for r, p in enumerate(procs):
                    if r not in results and not p.is_alive() and p.exitcode not in (0, None):
                        results[r] = ("error", f"process exited with code {p.exitcode}")
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    missing = [r for r in range(world_size) if r not in results]
    errors = {r: v[1] for r, v in results.items() if v[0] == "error"}
    if missing or errors:
        lines = [f"rank {r}: {msg}" for r, msg in sorted(errors.items())]
        lines += [f"rank {r}: no result within {deadline_s:.0f} s" for r in missing]
        raise RankFailure(f"{len(errors) + len(missing)} of {world_size} ranks failed:\n" + "\n".join(lines))
    return [results[r][1] for r in range(world_size)]
