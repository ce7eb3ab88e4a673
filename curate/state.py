"""The `_state/` folder: per-source results committed atomically, so a killed run resumes exactly.

Layout:
  _state/tmp/<key>-<pid>-<rand>/   a task's work dir while in flight (clip mp4s being written)
  _state/sources/<key>/            a committed source: record.json (the task) + <clip_id>.mp4 files
  _state/lock                      the lock that keeps a second run out of OUT (see lock_out)
A source is committed by writing record.json into its work dir and renaming the dir into sources/ (one
atomic rename on a POSIX filesystem): a kill at any moment leaves either no commit or a whole one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from curate.errors import CurateError, writing
from curate.ids import path_text
from curate.task import DONE, Clip, SourceTask
from dataload.files import atomic_write_text, read_regular, swap_dir
from dataload.lock import FolderLock, FolderLockedError

THUMB_HEIGHT = 120  # rows of a kept clip's thumbnail (the report's contact sheet)


def thumbnail_name(clip_id: str) -> str:
    """The file beside a clip's mp4 in its source's folder: the clip's middle frame, THUMB_HEIGHT rows, PNG
    (made while the clip is encoded, so the report need not decode it)."""
    return f"{clip_id}.thumb.png"


def state_dir(out: str | Path) -> Path:
    return Path(out) / "_state"


def sources_dir(out: str | Path) -> Path:
    return state_dir(out) / "sources"


def tmp_dir(out: str | Path) -> Path:
    return state_dir(out) / "tmp"


def lock_out(out: str | Path, command: str) -> FolderLock:
    """Hold OUT for this process: OUT/_state/lock, taken before any clean-up or write. The lock is a
    kernel flock, so it ends with its process: a run killed with -9 leaves nothing stale and the next
    run takes over at once. A second run (or `vfm-curate report`) is refused with one line naming the
    holder. The lock is never inherited by worker processes (close-on-exec, and it refuses pickling)."""
    lock = FolderLock(out, "_state/lock", command=command)
    try:
        with writing(out):
            lock.acquire()
    except FolderLockedError as exc:
        raise CurateError(path_text(str(exc))) from None
    return lock


def new_work_dir(out: str | Path, key: str) -> str:
    path = tmp_dir(out) / f"{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True, exist_ok=False)
    return str(path)


def task_to_dict(task: SourceTask) -> dict[str, Any]:
    record = dataclasses.asdict(dataclasses.replace(task, analysis=None))
    del record["analysis"]  # per worker only
    return record


def task_from_dict(data: dict[str, Any]) -> SourceTask:
    data = dict(data)
    clips = [Clip(**c) for c in data.pop("clips", [])]
    names = {f.name for f in dataclasses.fields(SourceTask)}
    task = SourceTask(**{k: v for k, v in data.items() if k in names and k != "analysis"})
    task.clips = clips
    if task.status == DONE:  # records of earlier versions left the verdict to the writer
        for clip in clips:
            clip.keep()
    return task


def commit_task(out: str | Path, task: SourceTask) -> Path:
    """Make `task` (and the clip files in its work dir) the committed result of its source."""
    work = Path(task.work_dir) if task.work_dir else Path(new_work_dir(out, task.key))
    work.mkdir(parents=True, exist_ok=True)
    # Only what the record names survives: partial files of an earlier failure are dropped.
    wanted = {c.media for c in task.clips if c.media} | {thumbnail_name(c.clip_id) for c in task.clips if c.media}
    for child in work.iterdir():
        if child.name not in wanted:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    record = task_to_dict(task)
    record["frame_times"] = []  # large and not needed after the run
    record["work_dir"] = None
    atomic_write_text(work / "record.json", json.dumps(record, sort_keys=True))
    final = sources_dir(out) / task.key
    final.parent.mkdir(parents=True, exist_ok=True)
    # a retried source (an earlier failure) has an old commit: swapped out, then removed
    swap_dir(work, final, tmp_dir(out) / f"old-{task.key}-{uuid.uuid4().hex[:8]}")
    task.work_dir = str(final)
    return final


MAX_RECORD_BYTES = 256 << 20  # a record holds one source's clips (and their embeddings)


def load_committed(out: str | Path, key: str) -> SourceTask | None:
    """The committed result of a source, or None when there is none. A record that cannot be read back
    (damaged by something other than this program: commits are atomic) counts as none, so the
    source is redone and its commit replaced."""
    path = sources_dir(out) / key / "record.json"
    if not path.is_file():
        return None
    try:
        task = task_from_dict(json.loads(read_regular(path, "record", MAX_RECORD_BYTES)))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    task.work_dir = str(path.parent)
    return task


def clean_tmp(out: str | Path) -> None:
    """Drop the work dirs of a killed run (nothing in tmp/ was ever committed)."""
    shutil.rmtree(tmp_dir(out), ignore_errors=True)
