"""Hostile members in a shard: each costs its own sample only. Links, devices, FIFOs, directories,
path-like, absolute or non-UTF-8 names, pax link paths and path overrides, duplicates, a key split across
the shard, members over their size cap (declared, or in a sparse file) and unknown member types are
refused with their reason; the samples before and after them are delivered. `read_shard` and
`index_shard` agree, and nothing is ever unpickled."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from dataload.shards import index_shard, read_shard, scan_shard
from tests.reliability.conftest import Canary
from tests.reliability.test_loader_common import (  # noqa: F401  (fixture)
    add_sample,
    clip_bytes,
    curated_dir,
    good_members,
    raw_tar,
    run_loader,
    tar_member,
)

REG, SYM, LNK, CHR, FIFO, DIR = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, \
    tarfile.FIFOTYPE, tarfile.DIRTYPE


def _evil_sample(t, clip, other: dict[str, tuple]) -> None:
    """Sample 'evil': a good JSON and MP4, plus `other` members name -> (data, type, extra kwargs)."""
    add_sample(t, "evil", clip)
    for name, (data, type_, kw) in other.items():
        tar_member(t, name, data, type_, **kw)


# case -> (build(t, clip), format, keys delivered, a word of the reason, the name it is reported under)
CASES = {
    "dotdot": (lambda t, c: tar_member(t, "../../x.json", b"{}"), "GNU", "../../x.json", "unsafe"),
    "absolute": (lambda t, c: tar_member(t, "/etc/cron.d/x.json", b"{}"), "GNU", "/etc/cron.d", "unsafe"),
    "subdir": (lambda t, c: tar_member(t, "a/b.json", b"{}"), "GNU", "a/b.json", "unsafe"),
    "drive-letter": (lambda t, c: tar_member(t, "C:evil.json", b"{}"), "GNU", "C:evil", "drive"),
    "control-chars": (lambda t, c: tar_member(t, "evil\n.json", b"{}"), "GNU", "evil\\n", "malformed"),
    "non-utf8-name": (lambda t, c: tar_member(t, "\udcff\udcfe.json", b"{}"), "GNU", "\\\\xff", "unsafe"),
    "long-dotdot": (lambda t, c: tar_member(t, "../" + "a" * 150 + ".json", b"{}"), "GNU", "../aaa", "unsafe"),
    "symlink": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"", SYM, {"linkname": "/etc/passwd"})}), "GNU",
                ":evil", "symbolic link"),
    "hardlink": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"", LNK, {"linkname": "a.mp4"})}), "GNU",
                 ":evil", "hard link"),
    "gnu-longlink": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"", SYM, {"linkname": "/x" * 80})}), "GNU",
                     ":evil", "link"),
    "char-device": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"", CHR, {})}), "GNU", ":evil", "device"),
    "fifo": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"", FIFO, {})}), "GNU", ":evil", "fifo"),
    "directory": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"", DIR, {})}), "GNU", ":evil", "directory"),
    "symlink-with-data": (lambda t, c: _evil_sample(
        t, c, {"evil.txt": (b"x" * 1500, SYM, {"linkname": "/etc/passwd", "write_data": True})}), "GNU", ":evil",
        "symbolic link"),
    "unknown-type": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"y" * 700, b"Z", {"write_data": True})}),
                     "GNU", ":evil", "type"),
    "pax-linkpath": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"hi", REG, {"pax": {"linkpath": "/etc"}})}),
                     "PAX", ":evil", "link"),
    "pax-path-traversal": (lambda t, c: tar_member(t, "ok.json", b"{}", pax={"path": "../../escape.json"}), "PAX",
                           "escape.json", "unsafe"),
    "pax-sparse": (lambda t, c: _evil_sample(t, c, {"evil.txt": (b"hi", REG, {"pax": {"GNU.sparse.major": "1"}})}),
                   "PAX", ":evil", "sparse"),
    "duplicate-member": (lambda t, c: _evil_sample(t, c, {"evil.json": (b"{}", REG, {})}), "GNU", ":evil",
                         "twice"),
    "pax-bad-record": (lambda t, c: _evil_sample(t, c, {"PaxHeader": (b"99999 path=x\n", tarfile.XHDTYPE,
                                                                      {"write_data": True}),
                                                        "evil.txt": (b"hi", REG, {})}), "GNU", ":evil", "pax"),
    "oversized-long-name": (lambda t, c: _evil_sample(t, c, {"LongLink": (b"n" * (2 << 20), tarfile.GNUTYPE_LONGNAME,
                                                                          {"write_data": True}),
                                                             "evil.txt": (b"hi", REG, {})}), "GNU", ":evil",
                            "extended header"),
}


def _shard(tmp_path: Path, clip: bytes, build, fmt: str) -> Path:
    root = curated_dir(tmp_path / "data")

    def full(t):
        add_sample(t, "a", clip)
        build(t, clip)
        add_sample(t, "z", clip)

    return raw_tar(root / "shards" / "shard-000000.tar", full, tarfile.PAX_FORMAT if fmt == "PAX" else
                   tarfile.GNU_FORMAT)


def _agree(shard: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """read_shard and index_shard keep and refuse the same samples; returns (keys, skipped)."""
    skipped: list = []
    keys = [s["__key__"] for s in read_shard(shard, skipped=skipped)]
    scan = scan_shard(shard)
    assert [e.key for e in scan.entries] == keys and scan.skipped == skipped and scan.error is None
    entries, err = index_shard(shard)
    assert [e.key for e in entries] == keys and (err is None) == (not skipped)
    return keys, skipped


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_member_costs_its_own_sample_only(clip_bytes, tmp_path, case, canary: Canary):  # noqa: F811
    build, fmt, reported, reason = CASES[case]
    shard = _shard(tmp_path, clip_bytes, build, fmt)
    keys, skipped = _agree(shard)
    assert keys == ["a", "z"], keys
    ((name, why),) = skipped
    assert reported in name and reason.lower() in why.lower(), (name, why)
    run = run_loader([tmp_path / "data"])
    assert run.keys == ["a", "z"] and len(run.loader.skipped) == 1
    assert "shard-000000.tar:" in run.text


def test_long_legit_names_are_read(clip_bytes, tmp_path):  # noqa: F811
    """The control for the cases above: GNU long names and pax paths that are fine are honoured."""
    key = "k" * 150

    def build(t, clip):
        add_sample(t, key, clip)
        tar_member(t, "x.json", b"{}", pax={"path": "m.json"})

    keys, skipped = _agree(_shard(tmp_path, clip_bytes, build, "PAX"))
    assert keys == ["a", key, "m", "z"] and not skipped


def test_key_split_across_the_shard_keeps_its_first_run(clip_bytes, tmp_path):  # noqa: F811
    def build(t, clip):
        add_sample(t, "evil", clip)
        add_sample(t, "m", clip)
        tar_member(t, "evil.pth", b"later")

    shard = _shard(tmp_path, clip_bytes, build, "GNU")
    keys, skipped = _agree(shard)
    assert keys == ["a", "evil", "m", "z"] and len(skipped) == 1 and "appears again" in skipped[0][1]


def _sparse_shard(path: Path, clip: bytes, name: str, declared: int) -> Path:
    """a, then a member declaring `declared` bytes that lie in a hole of a sparse file, then z."""
    head, tail = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.GNU_FORMAT) as t:
        add_sample(t, "a", clip)
        tar_member(t, name, size=declared, write_data=False)
        body = head.getvalue()[:t.offset]
    with tarfile.open(fileobj=tail, mode="w", format=tarfile.GNU_FORMAT) as t:
        add_sample(t, "z", clip)
    with open(path, "wb") as f:
        f.write(body)
        f.seek(len(body) + (declared + 511) // 512 * 512)  # the member's data: a hole, never written
        f.write(tail.getvalue())
    return path


@pytest.mark.parametrize("name,declared,cap", [("evil.mp4", 3 << 30, "1073741824"),
                                               ("evil.json", 17 << 20, "16777216")])
def test_member_over_its_cap_is_refused_unread(clip_bytes, tmp_path, name, declared, cap):  # noqa: F811
    """A sparse shard: the member's declared size is really in the file (no truncation), and over the cap."""
    root = curated_dir(tmp_path / "data")
    shard = _sparse_shard(root / "shards" / "shard-000000.tar", clip_bytes, name, declared)
    assert shard.stat().st_size > declared and shard.stat().st_blocks * 512 < 1 << 20
    keys, skipped = _agree(shard)
    assert keys == ["a", "z"] and cap in skipped[0][1] and skipped[0][0].endswith(":evil")
    run = run_loader([root])
    assert run.keys == ["a", "z"]


def test_configured_cap_applies_to_the_loader(clip_bytes, tmp_path):  # noqa: F811
    root = curated_dir(tmp_path / "data")
    raw_tar(root / "shards" / "shard-000000.tar", lambda t: [add_sample(t, k, clip_bytes) for k in ("a", "b")])
    from tests.reliability.test_loader_common import cfg

    run = run_loader([root], cfg(max_member_bytes=len(clip_bytes) - 1))
    assert run.keys == [] and all("over the cap" in why for _, why in run.loader.skipped)
    assert len(run.loader.skipped) == 2


def test_pickle_members_are_never_unpickled(clip_bytes, tmp_path, canary: Canary):  # noqa: F811
    """A sample carrying .pth/.pyd/.pickle members (pickles that would run code): they stay bytes."""
    payload = canary.payload()
    root = curated_dir(tmp_path / "data")

    def build(t):
        add_sample(t, "a", clip_bytes)
        for ext, data in sorted({**good_members("p", clip_bytes), "pth": payload, "pyd": payload,
                                 "pickle": payload}.items()):
            tar_member(t, f"p.{ext}", data)

    shard = raw_tar(root / "shards" / "shard-000000.tar", build)
    samples = list(read_shard(shard))
    assert samples[1]["pth"] == payload and samples[1]["pickle"] == payload
    run = run_loader([root])
    assert run.keys == ["a", "p"]
    canary.check()
