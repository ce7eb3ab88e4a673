"""Executors run a pipeline's per-source stages over source tasks: `local` (processes on this machine) and
`ray` (actors on a Ray cluster); both implement `base.Executor`."""

from __future__ import annotations

from curate.errors import CurateError
from curate.executors.base import Executor


def make_executor(name: str, workers: int, ray_address: str | None = None) -> Executor:
    """The executor the command line names (`local` or `ray`)."""
    if name == "local":
        from curate.executors.local import LocalExecutor

        return LocalExecutor(workers=workers)
    if name == "ray":
        from curate.executors.ray_executor import RayExecutor

        return RayExecutor(address=ray_address, workers=workers)
    raise CurateError(f"unknown executor {name!r} (local or ray)")
