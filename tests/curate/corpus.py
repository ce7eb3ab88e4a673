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


def tiny_video(path: Path, seed: int = 0, kind: str = "pan") -> None:
    """One 2.4 s shot at 96x64 (one candidate clip, kept for pan/objects): the cheapest useful source."""
    make_video(path, [Shot(kind, 60, seed=seed + 1)], [], width=96, height=64)


def bit_flipped(data: bytes, spans: tuple[float, ...] = (0.5, 0.7), length: int = 256) -> bytes:
    """The mp4 with `length` bytes inverted at fractions of its media data (after the first frames, before
    the index): tolerant decoding skips a few frames and counts them, the source stays usable."""
    out = bytearray(data)
    start, end = data.find(b"mdat") + 8, data.find(b"moov")
    assert 8 <= start < end, "expected an mp4 with its media data before its index"
    for frac in spans:
        at = start + int((end - start) * frac)
        for i in range(at, min(at + length, end)):
            out[i] ^= 0xFF
    return bytes(out)


_RELIABILITY: dict = {}


def reliability_corpus(tmp_path_factory) -> dict:
    """Made once per session and shared by the hostile-input suites (tests/reliability/test_curate_*):
    one/good.mp4, vids/{a,b,c}.mp4, and reference runs of each folder (in this process, no workers)."""
    if _RELIABILITY:
        return _RELIABILITY
    from curate.cli import main

    root = tmp_path_factory.mktemp("curate_hostile")
    (root / "one").mkdir()
    tiny_video(root / "one" / "good.mp4", seed=0)
    (root / "vids").mkdir()
    for i, name in enumerate("abc"):
        tiny_video(root / "vids" / f"{name}.mp4", seed=10 * (i + 1), kind="pan" if i % 2 == 0 else "objects")
    refs = {}
    for name in ("one", "vids"):
        out = root / f"ref_{name}"
        assert main(["run", str(root / name), "--out", str(out), "--workers", "0"]) == 0
        refs[name] = out
    _RELIABILITY.update(root=root, good=root / "one" / "good.mp4", one=root / "one", vids=root / "vids",
                        ref_one=refs["one"], ref_vids=refs["vids"])
    return _RELIABILITY


def comparable_meta(samples: dict[str, dict]) -> dict[str, tuple]:
    """What a rerun must reproduce besides the encoder's exact bytes: clip ids, every metadata field (shard
    aside), captions, and clips that decode to their frame count. (libx264 in the bundled FFmpeg is not
    byte-deterministic from one encode to the next within a process, so byte equality is checked only
    where each side encodes in a fresh process.)"""
    out = {}
    for key, s in samples.items():
        meta = json.loads(s["json"])
        meta.pop("shard")
        _, frames = decode_all(s["mp4"])
        out[key] = (json.dumps(meta, sort_keys=True), s.get("txt"), len(frames) == meta["num_frames"])
    return out
