"""`--executor ray --ray-address` on a local multi-node Ray cluster (ray.cluster_utils.Cluster: a head
without CPUs and two worker nodes, each its own raylet on this machine): the same outputs as the local
executor, shards written by worker processes, and a worker node killed with SIGKILL mid-run still leaves
every clip exactly once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from curate.config import load_config
from curate.pipeline import build_pipeline
from curate.runner import run_curation
from curate.step import PipelineStep, Resources
from curate.task import SourceTask
from tests.e2e.test_ray import assert_workers_wrote_shards, corpus, local_reference, outputs  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=2, env_vars={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
             for _ in range(2)]
    c.wait_for_nodes()
    yield c, nodes
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


class MarkAndWait(PipelineStep):
    """Before the commit: writes the Ray node id of its worker to `marker` the first time it sees
    `victim`, then waits there (long enough for the test to kill that node)."""

    name = "mark_and_wait"
    resources = Resources(cpus=1.0)

    def __init__(self, victim: str, marker: str):
        self.victim, self.marker = victim, marker

    def process(self, batch: list[SourceTask]) -> list[SourceTask]:
        import ray

        for task in batch:
            if task.source == self.victim and not os.path.exists(self.marker):
                with open(self.marker + ".tmp", "w") as f:
                    f.write(ray.get_runtime_context().get_node_id())
                os.replace(self.marker + ".tmp", self.marker)
                time.sleep(60)  # killed with its node before this ends
        return batch


@pytest.mark.slow
def test_two_nodes_survive_a_killed_node_and_match_local(cluster, corpus, local_reference, tmp_path):  # noqa: F811
    c, nodes = cluster
    cfg = load_config()
    # SIGKILL the node that holds a source in flight (every process of it: raylet, workers); the run
    # goes on on the other node and still equals the local executor's (one run covers both checks)
    out2 = tmp_path / "out2"
    pipeline = build_pipeline(cfg, str(out2))
    marker = tmp_path / "victim.node"
    pipeline.stages.insert(len(pipeline.stages) - 1, MarkAndWait(corpus[0], str(marker)))
    killed: list[str] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        node_id = marker.read_text() if marker.exists() else ""
        for node in list(c.worker_nodes):
            if node.node_id == node_id:
                c.remove_node(node, allow_graceful=False)
                killed.append(node_id)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = run_curation(corpus, out2, cfg, executor="ray", workers=2, ray_address=c.address, progress=False,
                           pipeline=pipeline)
    thread.join(timeout=5)
    assert killed, "no worker node was killed"
    assert len(c.worker_nodes) == 1
    assert summary.done == 3 and summary.failed == 1
    got = outputs(out2)  # raises if a shard member is there twice
    assert got["clips"] == local_reference["clips"] and got["members"] == local_reference["members"]
    assert_workers_wrote_shards(out2)
