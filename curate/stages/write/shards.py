"""Shards written by the workers: the driver plans which kept clip goes into which shard (input order, then
start frame, `max_clips_per_shard` a shard: the same layout on every executor and after any resume), each
worker writes whole shards from the committed clips and answers with the shard's manifest, and the driver
merges the manifests (checked against the plan) into dataset.json. No shard is written by the driver
(except with `--workers 0`, where the command's own process is the one worker).

A worker reads the clips from OUT/_state and writes into OUT/shards.building, so on several machines OUT
must be storage every worker reaches under the same path (a shared POSIX mount)."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ShardSample:
    key: str  # the clip id
    media: str  # the committed mp4 (absolute path)
    json: bytes  # the clip record's JSON member
    txt: bytes | None = None  # the caption, when there is one


@dataclass
class ShardJob:
    folder: str  # where the shard goes (OUT/shards.building)
    index: int  # shard-<index>.tar
    samples: list[ShardSample] = field(default_factory=list)


@dataclass
class ShardManifest:
    name: str
    keys: list[str]
    num_bytes: int
    sha256: str
    writer: str  # host:pid of the process that wrote it

    def entry(self) -> dict[str, object]:
        """What dataset.json lists of the shard (its writer goes to OUT/_state/shards.json)."""
        return {"name": self.name, "num_samples": len(self.keys), "bytes": self.num_bytes, "sha256": self.sha256}


def write_shard_job(job: ShardJob) -> ShardManifest:
    """Write one planned shard (atomically) and describe it. Runs in a worker."""
    from dataload.shard_writer import ShardWriter

    with ShardWriter(job.folder, max_samples_per_shard=max(1, len(job.samples)), start_index=job.index) as writer:
        for s in job.samples:
            members = {"mp4": Path(s.media).read_bytes(), "json": s.json}
            if s.txt is not None:
                members["txt"] = s.txt
            writer.write(s.key, members)
    (path,) = writer.written
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ShardManifest(path.name, [s.key for s in job.samples], path.stat().st_size, digest.hexdigest(),
                         f"{socket.gethostname()}:{os.getpid()}")


def merge_manifests(jobs: list[ShardJob], manifests: list[ShardManifest]) -> list[ShardManifest]:
    """The manifests in plan order, checked against the plan (each shard once, with exactly its planned
    clips in order)."""
    by_name = {}
    for m in manifests:
        if m.name in by_name:
            raise RuntimeError(f"shard {m.name} was written twice")
        by_name[m.name] = m
    out = []
    for job in jobs:
        name = f"shard-{job.index:06d}.tar"
        m = by_name.pop(name, None)
        if m is None or m.keys != [s.key for s in job.samples]:
            raise RuntimeError(f"shard {name}: the workers' manifest does not match the plan")
        out.append(m)
    if by_name:
        raise RuntimeError(f"unplanned shards written: {sorted(by_name)}")
    return out
