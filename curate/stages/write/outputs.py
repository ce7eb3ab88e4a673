"""The barrier and the outputs: dataset steps, shards, parquet, dataset.json (DESIGN.md section 2).

Runs once, after every source of the run is committed in `_state/`. Everything is derived from the
committed records in input order, so an interrupted run that is resumed writes the same shards as an
uninterrupted one; the shards are written by the executor's workers (`shards.py`), the parquet files and
dataset.json by the driver, each output file under a temporary name and renamed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from curate.errors import writing
from curate.executors.base import Executor
from curate.ids import path_text
from curate.stages.write.shards import ShardJob, ShardManifest, ShardSample, merge_manifests, write_shard_job
from curate.task import KEPT, Clip, SourceTask
from dataload.clip_record import arrow_schema, clip_json
from dataload.files import atomic_output, atomic_write_bytes, atomic_write_text, swap_dir


def source_schema():
    """sources.parquet: one row per input video."""
    import pyarrow as pa

    return pa.schema([
        ("source", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("duration_s", pa.float64()), ("num_frames", pa.int64()), ("fps", pa.float64()),
        ("width", pa.int64()), ("height", pa.int64()), ("codec", pa.string()),
        ("decode_errors", pa.int64()), ("num_clips", pa.int64()), ("num_kept", pa.int64()),
    ])


def _text_cells(row: dict[str, Any]) -> dict[str, Any]:
    """Every text cell as valid UTF-8: a source name that is not UTF-8 (and a reason quoting it) takes its
    one string form, curate.ids.path_text (undecodable bytes as \\xNN)."""
    return {k: path_text(v) if isinstance(v, str) else v for k, v in row.items()}


def source_row(task: SourceTask) -> dict[str, Any]:
    return _text_cells({
        "source": task.source, "status": task.status, "reason": task.reason, "duration_s": task.duration_s,
        "num_frames": task.num_frames, "fps": task.fps, "width": task.width, "height": task.height,
        "codec": task.codec, "decode_errors": task.decode_errors, "num_clips": len(task.clips),
        "num_kept": sum(1 for c in task.clips if c.status == KEPT),
    })


def clip_row(clip: Clip) -> dict[str, Any]:
    """The clip record's row (dataload.clip_record), its text cells as valid UTF-8."""
    return _text_cells(clip.row())


def write_parquet(path: Path, rows: list[dict[str, Any]], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    with writing(path), atomic_output(path) as f:  # a temporary name, removed if the write fails (a full disk)
        pq.write_table(table, f)


def plan_shards(out: Path, tasks: list[SourceTask], max_per_shard: int) -> list[ShardJob]:
    """Kept clips, in input order then start frame, `max_per_shard` a shard; sets each clip's `shard`."""
    kept = [(t, c) for t in tasks for c in sorted(t.clips, key=lambda c: c.start_frame) if c.status == KEPT]
    jobs: list[ShardJob] = []
    building = str((out / "shards.building").absolute())
    for i, (task, clip) in enumerate(kept):
        if i % max_per_shard == 0:
            jobs.append(ShardJob(building, i // max_per_shard))
        clip.shard = f"shard-{i // max_per_shard:06d}.tar"
        media = str((Path(task.work_dir) / (clip.media or "")).absolute())
        jobs[-1].samples.append(ShardSample(clip.clip_id, media, clip_json(clip_row(clip), clip.caption_windows),
                                            clip.caption.encode("utf-8") if clip.caption else None))
    return jobs


def write_shards(out: Path, tasks: list[SourceTask], max_per_shard: int,
                 runner: Executor | None = None) -> list[ShardManifest]:
    """Plan the shards, have the workers of `runner` write them into shards.building (in this process
    without one), merge their manifests and swap the folder in whole. Returns the merged manifest."""
    jobs = plan_shards(out, tasks, max_per_shard)
    building = out / "shards.building"
    shutil.rmtree(building, ignore_errors=True)
    try:
        with writing(building):
            building.mkdir(parents=True)
            manifests = runner.map(write_shard_job, jobs) if runner is not None else [write_shard_job(j) for j in jobs]
        merged = merge_manifests(jobs, manifests)
        written = sorted(p.name for p in building.iterdir())
        if written != sorted(m.name for m in merged):
            raise RuntimeError(f"shard layout mismatch: found {written}, planned {[m.name for m in merged]}")
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # nothing half-built stays behind (a full disk)
        raise
    swap_dir(building, out / "shards", out / "shards.old")
    return merged


def write_outputs(out: Path, tasks: list[SourceTask], max_per_shard: int, run_stats: dict[str, Any],
                  runner: Executor | None = None) -> None:
    """Shards (written by the workers of `runner`), then parquet, then dataset.json (the marker that the
    folder is complete, holding the merged shard manifest)."""
    manifests = write_shards(out, tasks, max_per_shard, runner)
    manifest = [m.entry() for m in manifests]
    num_kept = sum(len(m.keys) for m in manifests)
    write_parquet(out / "sources.parquet", [source_row(t) for t in tasks], source_schema())
    clips = [c for t in tasks for c in sorted(t.clips, key=lambda c: c.start_frame)]
    write_parquet(out / "clips.parquet", [clip_row(c) for c in clips], arrow_schema())
    dataset = {
        "kind": "curated", "version": 1, "shards": "shards", "num_clips": num_kept,
        "num_shards": len(manifest), "shard_manifest": manifest,
        "clips": "clips.parquet", "sources": "sources.parquet", "config": "config.yaml",
        "members": {"mp4": "H.264 yuv420p clip", "json": "clips.parquet row + caption_windows",
                    "txt": "caption (when present)"},
    }
    with writing(out / "dataset.json"):
        atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=1, sort_keys=True) + "\n")
    writers = [{"name": m.name, "writer": m.writer} for m in manifests]  # which process wrote each shard
    with writing(out / "_state" / "shards.json"):
        atomic_write_text(out / "_state" / "shards.json", json.dumps(writers, indent=1) + "\n")
    with writing(out / "_state" / "run.json"):
        atomic_write_bytes(out / "_state" / "run.json", json.dumps(run_stats, sort_keys=True).encode())
