"""The shard format: deterministic atomic writer, reader on good, truncated, corrupt and hostile tars."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from dataload.errors import ShardError
from dataload.shards import (
    CLIP_REQUIRED_KEYS,
    ShardWriter,
    index_shard,
    list_shards,
    read_members,
    read_shard,
    validate_clip_sample,
)


def _clip_json(i: int, **extra) -> bytes:
    meta = {"start_s": 0.0, "end_s": 2.0, "start_frame": 0, "end_frame": 20, "num_frames": 20, "fps": 10.0,
            "width": 64, "height": 48}
    assert set(meta) | {"clip_id", "source"} == set(CLIP_REQUIRED_KEYS)
    meta.update(clip_id=f"clip{i}", source="s.mp4", extra_field="later stages add me", **extra)
    return json.dumps(meta).encode()


def _write(folder: Path, n: int, per_shard: int) -> list[Path]:
    with ShardWriter(folder, max_samples_per_shard=per_shard) as w:
        for i in range(n):
            w.write(f"clip{i:03d}", {"mp4": bytes([i % 256]) * (100 + i), "json": _clip_json(i),
                                     "txt": f"caption {i}".encode()})
    return w.written


def test_roundtrip_numbering_and_schema(tmp_path):
    paths = _write(tmp_path, 7, 3)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert list_shards(tmp_path) == [str(p) for p in paths]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    samples = [s for p in paths for s in read_shard(p, required=("mp4", "json"))]
    assert [s["__key__"] for s in samples] == [f"clip{i:03d}" for i in range(7)]
    for i, s in enumerate(samples):
        assert s["mp4"] == bytes([i]) * (100 + i)
        assert s["txt"] == f"caption {i}".encode()
        meta = validate_clip_sample(s)
        assert meta["extra_field"] == "later stages add me"
    # The index agrees with the streaming reader.
    entries, err = index_shard(paths[0])
    assert err is None and [e.key for e in entries] == ["clip000", "clip001", "clip002"]
    with open(paths[0], "rb") as f:
        assert read_members(f, entries[1], ("mp4",)) == {"mp4": bytes([1]) * 101}
    # Standard tools read it too.
    with tarfile.open(paths[0]) as t:
        assert t.getnames()[:3] == ["clip000.json", "clip000.mp4", "clip000.txt"]


def test_deterministic_bytes(tmp_path):
    a = _write(tmp_path / "a", 5, 10)
    b = _write(tmp_path / "b", 5, 10)
    assert a[0].read_bytes() == b[0].read_bytes()


def test_writer_is_atomic_and_aborts(tmp_path):
    w = ShardWriter(tmp_path, max_samples_per_shard=10)
    w.write("k1", {"json": b"{}"})
    assert list_shards(tmp_path) == []  # nothing visible before close
    assert len(list(tmp_path.iterdir())) == 1
    w.close()
    assert len(list_shards(tmp_path)) == 1
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x", start_index=5) as w2:
            w2.write("k2", {"json": b"{}"})
            raise RuntimeError("boom")
    assert list((tmp_path / "x").iterdir()) == []


@pytest.mark.parametrize("key,ext", [("../x", "json"), ("a/b", "json"), ("/abs", "json"), ("a..b", "json"),
                                     ("a.b", "json"), ("k", "../json"), ("k", "")])
def test_writer_refuses_unsafe_names(tmp_path, key, ext):
    with pytest.raises(ValueError):
        with ShardWriter(tmp_path) as w:
            w.write(key, {ext: b"x"})


def test_validate_reports_missing(tmp_path):
    with pytest.raises(ShardError, match="misses member"):
        validate_clip_sample({"__key__": "k", "json": b"{}"})
    with pytest.raises(ShardError, match="misses key"):
        validate_clip_sample({"__key__": "k", "mp4": b"", "json": b'{"clip_id": 1}'})
    with pytest.raises(ShardError, match="not valid JSON"):
        validate_clip_sample({"__key__": "k", "mp4": b"", "json": b"{nope"})
    p = _write(tmp_path, 1, 1)[0]
    with pytest.raises(ShardError, match="misses member"):
        list(read_shard(p, required=("npy",)))


@pytest.mark.parametrize("cut", [100, 512, 1024 + 50, -1024 * 10 - 1])
def test_truncated_shard_names_itself(tmp_path, cut):
    p = _write(tmp_path, 4, 10)[0]
    data = p.read_bytes()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(data[:cut] if cut > 0 else data[: len(data) + cut])
    with pytest.raises(ShardError, match="bad.tar"):
        list(read_shard(bad))
    entries, err = index_shard(bad)
    assert err is not None and "bad.tar" in err
    # What the index keeps is whole.
    with open(bad, "rb") as f:
        for e in entries:
            read_members(f, e)


def test_truncated_at_header_boundary(tmp_path):
    """tarfile stops silently here; we must not (but every whole sample before the cut is kept)."""
    p = _write(tmp_path, 2, 10)[0]
    with tarfile.open(p) as t:
        last = t.getmembers()[-1]
        end = last.offset_data + (last.size + 511) // 512 * 512
    bad = tmp_path / "cut.tar"
    bad.write_bytes(p.read_bytes()[:end])
    got = []
    with pytest.raises(ShardError, match="truncated shard .*cut.tar"):
        for s in read_shard(bad):
            got.append(s["__key__"])
    assert got == ["clip000", "clip001"]
    # A cut inside the end-of-archive marker loses nothing: the shard is whole.
    bad.write_bytes(p.read_bytes()[:end + 100])
    assert [s["__key__"] for s in read_shard(bad)] == ["clip000", "clip001"]
    assert index_shard(bad)[1] is None


def test_corrupt_header_checksum(tmp_path):
    p = _write(tmp_path, 2, 10)[0]
    data = bytearray(p.read_bytes())
    data[0] ^= 0xFF  # first header's name byte
    bad = tmp_path / "corrupt.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="corrupt shard .*corrupt.tar"):
        list(read_shard(bad))
    bad.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ShardError, match="corrupt.tar"):
        list(read_shard(bad))


def _hostile_tar(path: Path, build) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        build(t)
    path.write_bytes(buf.getvalue())


def _add(t, name, data=b"x", type_=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


@pytest.mark.parametrize("case", ["dotdot", "absolute", "subdir", "symlink", "hardlink", "device", "dir",
                                  "longname_dotdot"])
def test_hostile_members_refused(tmp_path, case):
    """A hostile member costs its own sample only: the samples before and after it are read."""
    def build(t):
        _add(t, "good.json", b"{}")
        _add(t, "good2.json", b"{}")
        if case == "dotdot":
            _add(t, "../x.json")
        elif case == "absolute":
            _add(t, "/etc/passwd.json")
        elif case == "subdir":
            _add(t, "a/b.json")
        elif case == "symlink":
            _add(t, "evil.json", type_=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif case == "hardlink":
            _add(t, "evil.json", type_=tarfile.LNKTYPE, linkname="good.json")
        elif case == "device":
            _add(t, "evil.json", type_=tarfile.CHRTYPE)
        elif case == "dir":
            _add(t, "evil", type_=tarfile.DIRTYPE)
        elif case == "longname_dotdot":
            _add(t, "../" + "a" * 150 + ".json")
        _add(t, "after.json", b"{}")

    p = tmp_path / "hostile.tar"
    _hostile_tar(p, build)
    got = []
    with pytest.raises(ShardError, match="hostile.tar: 1 sample.s. refused"):
        for s in read_shard(p):
            got.append(s["__key__"])
    assert got == ["good", "good2", "after"]  # refused at the end, after every good sample
    skipped: list = []
    assert [s["__key__"] for s in read_shard(p, skipped=skipped)] == ["good", "good2", "after"]
    assert len(skipped) == 1 and "hostile.tar:" in skipped[0][0]
    entries, err = index_shard(p)
    assert [e.key for e in entries] == ["good", "good2", "after"] and "refused" in err


def test_pickle_members_stay_bytes(tmp_path):
    """A .pyd/.pth member is returned as raw bytes, never unpickled."""
    import pickle

    payload = pickle.dumps({"a": 1})
    with ShardWriter(tmp_path) as w:
        w.write("k", {"pyd": payload, "pth": payload, "json": b"{}"})
    (s,) = list(read_shard(w.written[0]))
    assert s["pyd"] == payload and s["pth"] == payload


def test_duplicate_key_refused(tmp_path):
    def build(t):
        _add(t, "a.json", b"{}")
        _add(t, "b.json", b"{}")
        _add(t, "a.txt", b"x")

    p = tmp_path / "dup.tar"
    _hostile_tar(p, build)
    with pytest.raises(ShardError, match="appears again after other samples"):
        list(read_shard(p))
    skipped: list = []
    assert [s["__key__"] for s in read_shard(p, skipped=skipped)] == ["a", "b"]  # the first run of a stands
    assert skipped == [(f"{p}:a", "key 'a' appears again after other samples (its first members are kept)")]


def test_missing_shard(tmp_path):
    with pytest.raises(ShardError, match="not found"):
        list(read_shard(tmp_path / "nope.tar"))
