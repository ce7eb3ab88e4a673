"""Drive one curation run: check inputs and OUT, stream new sources through the pipeline on an executor,
then the barrier (dataset steps), outputs and report. Resumable: committed sources are never redone."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from curate.config import CurateConfig, default_config, read_config_file
from curate.errors import CurateError, writing
from curate.executors import make_executor
from curate.ids import path_text, source_key
from curate.pipeline import Pipeline, build_pipeline
from curate.remote_out import is_remote
from curate.schedule import order_by_cost
from curate.stages.ingest.expand import SourceInput, expand_inputs
from curate.stages.write.outputs import write_outputs
from curate.stages.write.report import write_report
from curate.state import clean_tmp, commit_task, load_committed, lock_out, new_work_dir
from curate.task import DONE, FAILED, KEPT, SKIPPED, SourceTask
from curate.typed_config import apply
from dataload.files import atomic_write_text


@dataclass
class RunSummary:
    sources: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    processed: int = 0  # sources run by this invocation (the rest were resumed)
    clips: int = 0
    kept: int = 0
    wall_s: float = 0.0
    video_s: float = 0.0  # seconds of video processed by this invocation

    @property
    def video_h_per_wall_h(self) -> float:
        return self.video_s / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        return (f"sources: {self.done} done, {self.failed} failed, {self.skipped} skipped "
                f"({self.processed} processed now, {self.sources - self.processed} resumed); "
                f"clips: {self.kept} kept, {self.clips - self.kept} rejected; "
                f"{self.video_h_per_wall_h:.1f} video hours per wall hour")


def _ours(name: str) -> bool:
    """What a run killed before config.yaml existed may have left in OUT."""
    return name == "_state" or name.startswith(".config.yaml.")


def _previous_config(cfg_path: Path) -> dict | None:
    """The config a folder's config.yaml describes, keys it lacks taking today's defaults (so a key added
    later with a default that keeps the old behaviour does not orphan older runs); None if unreadable."""
    try:
        previous = default_config()
        apply(previous, read_config_file(cfg_path))
    except CurateError:
        return None
    return previous.to_dict()


def _size(src: SourceInput) -> int:
    try:
        return os.stat(src.local_path).st_size if src.local_path else 0
    except OSError:
        return 0  # the probe stage reports what is wrong with it


def _prepare_outputs() -> None:
    """Import what writing the outputs needs (parquet: a quarter of a second)."""
    import pyarrow.parquet  # noqa: F401


def check_out(out: Path, cfg: CurateConfig) -> None:
    """Refuse an OUT that is not a folder, holds another config, or holds something else (reads only)."""
    if out.exists() and not out.is_dir():
        raise CurateError(f"--out {path_text(str(out))} exists and is not a folder")
    cfg_path = out / "config.yaml"
    if cfg_path.is_file():
        if _previous_config(cfg_path) != cfg.to_dict():
            raise CurateError(f"{path_text(str(out))} holds a run with a different config "
                              f"({path_text(str(cfg_path))}); use the same config to resume, or another --out")
    elif out.is_dir() and any(not _ours(p.name) for p in out.iterdir()):
        raise CurateError(f"--out {path_text(str(out))} is not empty and holds no curation run (no config.yaml)")


def prepare_out(out: Path, cfg: CurateConfig) -> None:
    """Create OUT or check that it holds a run of the same config (refused otherwise); with the lock held."""
    check_out(out, cfg)
    cfg_path = out / "config.yaml"
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "_state").mkdir(exist_ok=True)
        if not cfg_path.is_file():
            with writing(cfg_path):
                atomic_write_text(cfg_path, cfg.to_yaml())


class _Progress:
    """Per-stage progress bars on a terminal; silent otherwise."""

    def __init__(self, stack: ExitStack, stage_names: list[str], total: int, enabled: bool) -> None:
        self.bars = None
        if not enabled or total == 0:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = stack.enter_context(Progress(
            TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            transient=False))
        self.bars = {n: self.progress.add_task(n, total=total) for n in stage_names}

    def __call__(self, stage: str, n: int) -> None:
        if self.bars and stage in self.bars:
            self.progress.advance(self.bars[stage], n)


def run_curation(inputs: list[str], out: str | Path, cfg: CurateConfig, *, executor: str = "local",
                 workers: int = 2, ray_address: str | None = None, progress: bool | None = None,
                 pipeline: Pipeline | None = None) -> RunSummary:
    """One run into OUT. Raises CurateError (exit 2) before any work for bad inputs, a foreign or busy OUT;
    OutputError (exit 2) when OUT cannot be written; KeyboardInterrupt on Ctrl-C (workers stopped first).
    Whatever stops a run, the committed sources stay and a rerun resumes."""
    t0 = time.perf_counter()
    out_url = str(out)
    out = Path(out)
    sources = expand_inputs(inputs, cfg.ingest)  # a missing input stops here, before any work
    if cfg.transcode.encoder == "nvenc":
        from curate.stages.transcode.encode import nvenc_available

        if not nvenc_available():
            raise CurateError("transcode.encoder=nvenc, but no ffmpeg with a working h264_nvenc is present")
    remote = None
    if is_remote(out_url):  # object storage: the run works in a local staging folder (curate/remote_out.py)
        from curate.remote_out import RemoteOut

        remote = RemoteOut.open(out_url)
        remote.check()
        out = remote.local
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
    pipeline = pipeline or build_pipeline(cfg, str(out))
    runner = make_executor(executor, workers, ray_address)
    if remote is None:
        check_out(out, cfg)  # refuse before writing anything into a folder that is not ours
    lock = lock_out(out, "vfm-curate run")  # before any clean-up or write: a second run never touches our work
    try:
        if remote is not None:
            remote.pull()  # the bucket's committed sources: what this run resumes from
            try:
                check_out(out, cfg)
            except CurateError as exc:  # name the bucket, not the staging folder
                raise CurateError(str(exc).replace(str(out / "config.yaml"), f"{out_url}/config.yaml")
                                  .replace(str(out), out_url)) from None
            had_config = (out / "config.yaml").is_file()
        prepare_out(out, cfg)
        if remote is not None and not had_config:
            remote.put("config.yaml")
        clean_tmp(out)
        summary = _run_locked(sources, out, cfg, pipeline, runner, executor, workers, progress, t0,
                              remote.push_source if remote is not None else None)
        if remote is not None:
            remote.push_outputs()
    except BaseException:
        clean_tmp(out)  # work dirs of sources in flight (never committed): free the space now
        raise
    finally:
        try:
            runner.close()
        finally:
            lock.release()
    return summary


def _run_locked(sources: list[SourceInput], out: Path, cfg: CurateConfig, pipeline: Pipeline, runner, executor: str,
                workers: int, progress: bool | None, t0: float,
                committed_hook: Callable[[str], None] | None = None) -> RunSummary:
    keys = [source_key(s.source) for s in sources]
    todo: list[tuple[int, SourceInput]] = []
    for i, (src, key) in enumerate(zip(sources, keys)):
        prev = load_committed(out, key)
        if prev is None or prev.status == FAILED:  # failures are retried: the cause may be gone
            todo.append((i, src))

    summary = RunSummary(sources=len(sources), processed=len(todo))
    stage_s: dict[str, float] = {}  # worker seconds per stage, summed over this run's sources

    # Sources that ingest could not even find (a list file's missing entry) fail without any work.
    with writing(out / "_state"):
        for i, src in todo:
            if src.error is not None:
                task = SourceTask(index=i, source=src.source, key=keys[i])
                task.fail(src.error)
                commit_task(out, task)
                if committed_hook is not None:
                    committed_hook(task.key)
    runnable = [(i, src, _size(src)) for i, src in todo if src.error is None]
    if executor == "local" and runnable and runner.workers > len(runnable):
        runner.workers = len(runnable)  # a worker process per source at most: each one sets up every stage
    # Big sources first, the last ones by estimated cost (curate/schedule.py); the outputs follow the
    # input order whatever the processing order.
    runnable = order_by_cost(runnable, lambda r: r[2], lambda r: r[1].local_path, runner)

    def tasks() -> Iterator[SourceTask]:  # lazy: work dirs appear only as sources enter the pipeline
        for i, src, size in runnable:
            key = keys[i]
            with writing(out / "_state"):
                work_dir = new_work_dir(out, key)
            yield SourceTask(index=i, source=src.source, key=key, local_path=src.local_path,
                             caption_path=src.caption_path, work_dir=work_dir, size_bytes=size)
        # Every source is handed out: the driver waits for the last ones, so it prepares the barrier's
        # imports meanwhile (on a core the last workers leave free).
        threading.Thread(target=_prepare_outputs, name="vfm-prepare-outputs", daemon=True).start()

    def on_result(task: SourceTask) -> None:
        if not Path(task.work_dir or "").is_relative_to(out / "_state" / "sources"):
            with writing(out / "_state"):
                commit_task(out, task)  # the worker died before committing: record the failure
        if committed_hook is not None:
            committed_hook(task.key)  # e.g. upload the commit to the bucket OUT lives in
        summary.video_s += task.duration_s or 0.0
        for name, sec in task.stage_seconds.items():
            stage_s[name] = stage_s.get(name, 0.0) + sec

    if runnable:
        with ExitStack() as stack:
            show = sys.stderr.isatty() if progress is None else progress
            bar = _Progress(stack, pipeline.names, len(runnable), show)
            runner.run(pipeline.stages, tasks(), on_result, bar)

    committed = []
    for key, src in zip(keys, sources):
        task = load_committed(out, key)
        if task is None:
            raise RuntimeError(f"source {path_text(src.source)} was not committed")
        committed.append(task)
    for task in committed:
        task.clips.sort(key=lambda c: c.start_frame)
    for step in pipeline.dataset_steps:
        step(committed)
    # One wall time for the console line and report.md alike: the run up to its final write.
    summary.wall_s = time.perf_counter() - t0
    stats = {"wall_s": summary.wall_s, "workers": workers, "executor": executor, "processed": summary.processed,
             "resumed": summary.sources - summary.processed, "video_s": summary.video_s,
             "video_h_per_wall_h": summary.video_h_per_wall_h,
             "stage_seconds": [[n, round(stage_s[n], 3)] for n in pipeline.names if n in stage_s]}
    with writing(out):
        write_outputs(out, committed, cfg.write.max_clips_per_shard, stats, runner)
        write_report(out)
    for task in committed:
        summary.done += task.status == DONE
        summary.failed += task.status == FAILED
        summary.skipped += task.status == SKIPPED
        summary.clips += len(task.clips)
        summary.kept += sum(1 for c in task.clips if c.status == KEPT)
    with writing(out / "_state"):
        atomic_write_text(out / "_state" / "summary.json", json.dumps(summary.__dict__, sort_keys=True))
    return summary
