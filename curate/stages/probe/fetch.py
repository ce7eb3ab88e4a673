"""Remote sources (fsspec URLs) are copied into the task's work dir once: decoders want a local file."""

from __future__ import annotations

import os
import shutil

from curate.task import SourceTask
from dataload.files import atomic_output


def fetch_remote(task: SourceTask) -> str:
    """The local copy of `task.source` (written atomically, so a killed copy is never taken as whole)."""
    import fsspec

    ext = os.path.splitext(task.source.split("?", 1)[0])[1] or ".bin"
    dest = os.path.join(task.work_dir or ".", f"source{ext}")
    if not os.path.exists(dest):
        with fsspec.open(task.source, "rb") as src, atomic_output(dest, fsync=False) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return dest
