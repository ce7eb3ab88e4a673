"""Damaged tar structure: a truncated shard keeps every sample that is whole before the cut, wherever the
cut falls (inside a header, at a block boundary, inside a member's data, inside the end-of-archive marker);
a bad header checksum, a bad size field or a size past the end of the file ends the shard there, after the
samples before it. `read_shard` and `index_shard` agree on every case, and the loader delivers the same.

The rule (dataload/shards.py): the sample in progress at the fault is kept when every member of it that
was read is whole; a member whose header was read and whose data is cut drops its sample; the loader
then checks required members (a sample cut before its .mp4 is skipped for missing it).
"""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import pytest

from dataload.shards import read_shard, scan_shard
from tests.reliability.test_loader_common import (  # noqa: F401  (fixture)
    add_sample,
    clip_bytes,
    curated_dir,
    raw_tar,
    run_loader,
)

KEYS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def whole(clip_bytes, tmp_path_factory) -> tuple[bytes, dict[str, tarfile.TarInfo]]:  # noqa: F811
    """A shard of samples a, b, c (json, mp4, txt each) and its members by name."""
    p = raw_tar(tmp_path_factory.mktemp("whole") / "w.tar", lambda t: [add_sample(t, k, clip_bytes) for k in KEYS])
    with tarfile.open(p) as t:
        members = {m.name: m for m in t.getmembers()}
    return p.read_bytes(), members


def _pad(n: int) -> int:
    return (n + 511) // 512 * 512


def _cuts(members: dict[str, tarfile.TarInfo], total: int) -> dict[str, tuple[int, list[str], list[str], bool]]:
    """name -> (cut offset, samples read_shard yields, samples the loader delivers, structural error?)."""
    m = members
    end = m["c.txt"].offset_data + _pad(m["c.txt"].size)  # where the end-of-archive marker starts
    return {
        "empty-file": (0, [], [], True),
        "inside-first-header": (100, [], [], True),
        "inside-b-json-header": (m["b.json"].offset + 200, ["a"], ["a"], True),
        "b-mp4-header-boundary": (m["b.mp4"].offset, ["a", "b"], ["a"], True),  # b misses its mp4
        "b-mp4-data-start": (m["b.mp4"].offset_data, ["a"], ["a"], True),
        "inside-b-mp4-data": (m["b.mp4"].offset_data + m["b.mp4"].size // 2, ["a"], ["a"], True),
        # the data is whole, only its padding to the block is cut: b keeps its json and mp4
        "b-mp4-padding": (m["b.mp4"].offset_data + m["b.mp4"].size + (1 if m["b.mp4"].size % 512 else 0),
                          ["a", "b"], ["a", "b"], True),
        "inside-b-txt-data": (m["b.txt"].offset_data + 3, ["a"], ["a"], True),
        "before-end-marker": (end, KEYS, KEYS, True),
        "inside-end-marker": (end + 300, KEYS, KEYS, False),
        "inside-record-padding": (total - 700, KEYS, KEYS, False),
    }


CUT_NAMES = ["empty-file", "inside-first-header", "inside-b-json-header", "b-mp4-header-boundary",
             "b-mp4-data-start", "inside-b-mp4-data", "b-mp4-padding", "inside-b-txt-data", "before-end-marker",
             "inside-end-marker", "inside-record-padding"]


def _agree(shard: Path) -> tuple[list[str], str | None]:
    skipped: list = []
    keys, error = [], None
    try:
        for s in read_shard(shard, skipped=skipped):
            keys.append(s["__key__"])
    except Exception as e:  # noqa: BLE001 - the structural fault, raised after the samples before it
        error = str(e)
    scan = scan_shard(shard)
    assert [e.key for e in scan.entries] == keys and scan.skipped == skipped, (scan, keys, skipped)
    assert (scan.error is None) == (error is None) and (error is None or scan.error in error)
    return keys, error


@pytest.mark.parametrize("cut", CUT_NAMES)
def test_truncated_shard_keeps_every_whole_sample(whole, tmp_path, cut):
    data, members = whole
    at, read_keys, loaded_keys, structural = _cuts(members, len(data))[cut]
    root = curated_dir(tmp_path / "data")
    shard = root / "shards" / "shard-000000.tar"
    shard.write_bytes(data[:at])
    keys, error = _agree(shard)
    assert keys == read_keys, (cut, keys)
    assert (error is not None) == structural and (error is None or "truncated shard" in error), error
    run = run_loader([root])
    assert run.keys == loaded_keys
    if structural:
        assert "rest of shard" in run.text and "shard-000000.tar" in run.text


def _patch_header(data: bytearray, offset: int, field: slice, value: bytes) -> None:
    """Overwrite a header field and fix the checksum, so only the field itself is wrong."""
    data[offset + field.start: offset + field.stop] = value.ljust(field.stop - field.start, b"\0")
    data[offset + 148: offset + 156] = b" " * 8
    data[offset + 148: offset + 156] = b"%06o\0 " % sum(data[offset: offset + 512])


DAMAGE = {
    # name -> (how, samples read_shard yields, samples the loader delivers, words of the error)
    "checksum-of-b-json": (lambda d, m: d.__setitem__(m["b.json"].offset + 3, d[m["b.json"].offset + 3] ^ 1),
                           ["a"], ["a"], "checksum"),
    "checksum-of-b-mp4": (lambda d, m: d.__setitem__(m["b.mp4"].offset + 130, 0x39), ["a", "b"], ["a"],
                          "checksum"),
    "size-not-octal": (lambda d, m: _patch_header(d, m["b.mp4"].offset, slice(124, 136), b"00000-12345"),
                       ["a", "b"], ["a"], "size field"),
    "size-negative-base256": (lambda d, m: _patch_header(d, m["b.mp4"].offset, slice(124, 136), b"\xff" * 12),
                              ["a", "b"], ["a"], "size field"),
    "size-past-the-end": (lambda d, m: _patch_header(d, m["b.mp4"].offset, slice(124, 136), b"77777777777"),
                          ["a"], ["a"], "past the end"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_header_ends_the_shard_after_the_samples_before(whole, tmp_path, case):
    data, members = whole
    how, read_keys, loaded_keys, words = DAMAGE[case]
    bad = bytearray(data)
    how(bad, members)
    root = curated_dir(tmp_path / "data")
    shard = root / "shards" / "shard-000000.tar"
    shard.write_bytes(bytes(bad))
    keys, error = _agree(shard)
    assert keys == read_keys and error is not None and words in error, (keys, error)
    run = run_loader([root])
    assert run.keys == loaded_keys and "rest of shard" in run.text


def test_random_byte_flips_never_escape(whole, tmp_path):
    """40 seeded one-byte flips anywhere in the shard: the readers agree, the loader never raises and
    every sample is either delivered or named with its reason."""
    data, _ = whole
    rng = random.Random(16)
    root = curated_dir(tmp_path / "data")
    shard = root / "shards" / "shard-000000.tar"
    end = len(data) - 9000  # the flips land in the members, not in the trailing zeros
    for i in range(40):
        bad = bytearray(data)
        pos = rng.randrange(end)
        bad[pos] ^= 1 << rng.randrange(8)
        shard.write_bytes(bytes(bad))
        keys, _ = _agree(shard)
        assert set(keys) <= set(KEYS)
        run = run_loader([root])
        accounted = set(run.keys) | {n.rsplit(":", 1)[-1] for n, _ in run.loader.skipped}
        lost_rest = any("rest of shard" in r for _, r in run.loader.skipped)
        assert lost_rest or set(KEYS) <= accounted, (i, pos, run.keys, run.loader.skipped)
