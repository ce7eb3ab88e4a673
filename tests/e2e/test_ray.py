"""`--executor ray` on a local 2-CPU Ray cluster: the same outputs as `--executor local` (clip ids, clip
bytes, parquet rows apart from `shard`), and a worker killed mid-task (then a resumed rerun) in a
layout with a stand-in GPU stage (its own actor, batched).
One cluster for the module: Ray takes seconds to start."""

from __future__ import annotations

import json
import os
import signal
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.config import load_config
from curate.pipeline import build_pipeline
from curate.runner import run_curation
from curate.step import PipelineStep, Resources
from curate.task import SourceTask

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}}
        # one logical GPU (Ray only schedules it; nothing here uses CUDA) so the GPU-actor path runs too
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, runtime_env=env, log_to_driver=False)
    # the kill stage below lives in this test module: ship it to the workers by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from dataload.synthetic import Shot, Transition, make_video

    root = tmp_path_factory.mktemp("ray_corpus")
    specs = [
        [Shot("pan", 60, seed=1), Shot("objects", 60, seed=2)],  # shots over split.min_clip_s (2 s)
        [Shot("zoom", 60, seed=3), Shot("static", 60, seed=4)],
        [Shot("objects", 64, seed=5)],
    ]
    paths = []
    for i, shots in enumerate(specs):
        p = root / f"video{i}.mp4"
        make_video(p, shots, [Transition("cut")] * (len(shots) - 1), width=128, height=72, seed=i)
        paths.append(str(p))
    bad = root / "zero.mp4"
    bad.write_bytes(b"")
    paths.append(str(bad))
    return paths


def outputs(out: Path) -> dict:
    """What must match across executors: parquet rows (clips without `shard`) and every shard member."""
    clips = pq.read_table(out / "clips.parquet").drop(["shard"]).to_pylist()
    sources = pq.read_table(out / "sources.parquet").to_pylist()
    members: dict[str, bytes] = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                data = t.extractfile(m).read()
                assert m.name not in members, f"{m.name} written twice"
                if m.name.endswith(".json"):
                    meta = json.loads(data)
                    meta.pop("shard")
                    data = json.dumps(meta, sort_keys=True).encode()
                members[m.name] = data
    return {"clips": sorted(clips, key=lambda r: r["clip_id"]), "sources": sources, "members": members}


@pytest.fixture(scope="module")
def local_reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    summary = run_curation(corpus, out, load_config(), executor="local", workers=2, progress=False)
    assert summary.done == 3 and summary.failed == 1
    ref = outputs(out)
    assert any(r["status"] == "kept" for r in ref["clips"]), "the corpus must keep some clips to compare bytes"
    assert_workers_wrote_shards(out)
    return ref


def assert_workers_wrote_shards(out: Path) -> None:
    """Every shard was written by a worker process (OUT/_state/shards.json), none by this driver."""
    writers = json.loads((out / "_state" / "shards.json").read_text())
    assert writers and {w["name"] for w in writers} == {p.name for p in (out / "shards").glob("*.tar")}
    assert all(int(w["writer"].rsplit(":", 1)[1]) != os.getpid() for w in writers), writers


@pytest.mark.slow
def test_ray_matches_local(ray_cluster, corpus, local_reference, tmp_path):
    out = tmp_path / "out"
    summary = run_curation(corpus, out, load_config(), executor="ray", workers=2, progress=False)
    assert summary.done == 3 and summary.failed == 1  # the zero-byte file fails, as locally
    got = outputs(out)
    assert got["clips"] == local_reference["clips"]
    assert got["sources"] == local_reference["sources"]
    assert got["members"].keys() == local_reference["members"].keys()
    for name, data in local_reference["members"].items():
        assert got["members"][name] == data, f"{name} differs between the ray and local executors"
    assert_workers_wrote_shards(out)


class KillOnce(PipelineStep):
    """Kills its own worker process (SIGKILL) the first time it sees `victim`, after the clips are
    transcoded into the task's work dir and before the commit: the worst moment to die."""

    name = "kill_once"
    resources = Resources(cpus=1.0)

    def __init__(self, victim: str, marker: str):
        self.victim, self.marker = victim, marker

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        for task in batch:
            if task.source == self.victim and not os.path.exists(self.marker):
                with open(self.marker, "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return batch


class RecordBatches(PipelineStep):
    """A stand-in GPU stage: declares one GPU and a batch size of 3, and logs the size of every batch."""

    name = "record_batches"
    resources = Resources(cpus=1.0, gpus=1.0, batch_size=3)

    def __init__(self, log: str):
        self.log = log

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {len(batch)}\n")
        return batch



@pytest.mark.slow
def test_ray_worker_killed_mid_task_is_retried_without_loss_or_duplicates(ray_cluster, corpus, local_reference,
                                                                           tmp_path):
    from curate.executors.ray_executor import segments

    out = tmp_path / "out"
    cfg = load_config()
    pipeline = build_pipeline(cfg, str(out))
    marker = tmp_path / "killed.pid"
    pipeline.stages.insert(len(pipeline.stages) - 1, KillOnce(corpus[1], str(marker)))
    # and a stand-in GPU stage before transcode: segments CPU | GPU (batches of 3, one actor) | CPU
    log = tmp_path / "batches.log"
    pipeline.stages.insert(len(pipeline.stages) - 3, RecordBatches(str(log)))
    assert [len(s) for s in segments(pipeline.stages)] == [len(pipeline.stages) - 4, 1, 3]
    summary = run_curation(corpus, out, cfg, executor="ray", workers=2, progress=False, pipeline=pipeline)
    assert marker.is_file(), "the worker was never killed"
    lines = log.read_text().splitlines()
    assert sum(int(x.split()[1]) for x in lines) == len(corpus)  # every task (the failed one too) passed once
    assert max(int(x.split()[1]) for x in lines) == 3  # batched up to the stage's batch size
    assert len({x.split()[0] for x in lines}) == 1  # one GPU -> one actor
    assert summary.done == 3 and summary.failed == 1
    got = outputs(out)
    assert got["clips"] == local_reference["clips"]
    assert got["members"] == local_reference["members"]
    assert not any((out / "_state" / "tmp").glob("*/*.mp4")), "a partial work dir was left behind"
    committed = sorted(p.name for p in (out / "_state" / "sources").iterdir())
    assert len(committed) == 4
    assert int(marker.read_text()) != os.getpid()  # it was a worker that died, not this process
    # a rerun resumes: the committed sources are not redone (the zero-byte input, left out here, would be
    # retried as every failure is), and the shards hold the same clips once each
    again = run_curation(corpus[:3], out, cfg, executor="ray", workers=2, progress=False,
                         pipeline=build_pipeline(cfg, str(out)))
    assert again.processed == 0 and again.done == 3
    assert outputs(out)["members"] == local_reference["members"]

