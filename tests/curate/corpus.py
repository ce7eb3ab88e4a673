"""Small synthetic corpora for the curation tests and the demo (tiny, fast, with known content)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from dataload.synthetic import Shot, Transition, make_video, write_srt


def mixed_video(path: Path, seed: int = 0, srt: bool = True) -> None:
    """Four shots: a pan (kept), a still shot (static), a blurred pan (blurry), moving objects (kept)."""
    shots = [Shot("pan", 60, seed=seed + 1), Shot("static", 60, seed=seed + 2),
             Shot("pan", 60, seed=seed + 3, blur=3.0), Shot("objects", 60, seed=seed + 4)]
    make_video(path, shots, [Transition("cut")] * 3, width=160, height=96)
    if srt:
        write_srt(path.with_suffix(".srt"), [(0.0, 2.0, f"a pan over hills {seed}"), (2.5, 4.5, "a still room"),
                                             (7.7, 9.0, "balls bouncing")])


def two_shot_video(path: Path, seed: int = 0) -> None:
    make_video(path, [Shot("pan", 55, seed=seed + 1), Shot("objects", 55, seed=seed + 2)], [Transition("cut")],
               width=128, height=72)


def read_shards(out: Path) -> dict[str, dict]:
    """clip_id -> {ext: bytes} from OUT/shards, with plain tarfile (checks: no duplicates, no temp files)."""
    samples: dict[str, dict] = {}
    shard_dir = Path(out) / "shards"
    assert not [p for p in shard_dir.iterdir() if not p.name.endswith(".tar")], list(shard_dir.iterdir())
    for shard in sorted(shard_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                sample = samples.setdefault(key, {"__shard__": shard.name})
                assert sample["__shard__"] == shard.name, f"{key} in two shards"
                assert ext not in sample, f"{member.name} twice"
                sample[ext] = data
    return samples


def clip_rows(out: Path) -> dict[str, dict]:
    rows = pq.read_table(Path(out) / "clips.parquet").to_pylist()
    return {r["clip_id"]: r for r in rows}


def comparable(samples: dict[str, dict]) -> dict[str, tuple]:
    """What must not change across executors and resumes: clip bytes and metadata (shard aside)."""
    out = {}
    for key, s in samples.items():
        meta = json.loads(s["json"])
        meta.pop("shard")
        out[key] = (s["mp4"], json.dumps(meta, sort_keys=True), s.get("txt"))
    return out


def decode_all(mp4: bytes):
    import av

    with av.open(io.BytesIO(mp4)) as c:
        st = c.streams.video[0]
        frames = [f for f in c.decode(st)]
        return st.codec_context.name, frames
