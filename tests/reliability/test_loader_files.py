"""Non-regular files where the loader expects files: a FIFO, a socket, a character device, a symlink loop,
a dangling link or a directory named like a shard is skipped with its kind named (the other shards are
read); named as a dataset's dataset.json it is one clear ValueError. Nothing blocks: every case is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import pytest

from dataload.loader import LoaderWarning, index_source, resolve_source
from tests.reliability.test_loader_common import (  # noqa: F401  (fixture)
    bounded,
    cfg,
    clip_bytes,
    good_members,
    run_loader,
    write_samples,
)


@contextlib.contextmanager
def _unix_socket(path: Path):
    """A listening AF_UNIX socket at `path` (bound from its folder: socket paths are short)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    try:
        os.chdir(path.parent)
        s.bind(path.name)
        s.listen(1)
    finally:
        os.chdir(cwd)
    try:
        yield
    finally:
        s.close()


def _make(kind: str, path: Path, stack: contextlib.ExitStack) -> str:
    """Put a `kind` at `path`; the words its refusal must name."""
    if kind == "fifo":
        os.mkfifo(path)
        return "fifo"
    if kind == "socket":
        stack.enter_context(_unix_socket(path))
        return "socket"
    if kind == "dev-zero":
        os.symlink("/dev/zero", path)
        return "character device"
    if kind == "symlink-loop":
        os.symlink(path.name, path)
        return "symbolic link loop"
    if kind == "dangling":
        os.symlink(path.parent / "nowhere.tar", path)
        return "not found"
    if kind == "directory":
        path.mkdir()
        return "directory"
    raise AssertionError(kind)


KINDS = ["fifo", "socket", "dev-zero", "symlink-loop", "dangling", "directory"]


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_shard_is_skipped_and_named(clip_bytes, tmp_path, kind):  # noqa: F811
    root = tmp_path / "data"
    write_samples(root, [("a0", good_members("a0", clip_bytes))], index=0)
    write_samples(root, [("c0", good_members("c0", clip_bytes))], index=2)
    with contextlib.ExitStack() as stack:
        words = _make(kind, root / "shards" / "shard-000001.tar", stack)
        run = run_loader([root])
        assert run.keys == ["a0", "c0"]
        ((name, why),) = run.loader.skipped
        assert name.endswith("shard-000001.tar") and words in why.lower(), why
        assert "shard-000001.tar" in run.text
        # file:// URLs are held to the same rule
        url = run_loader([f"file://{root}"])
        assert url.keys == ["a0", "c0"] and words in url.loader.skipped[0][1].lower()


@pytest.mark.parametrize("kind", ["fifo", "socket", "dev-zero", "symlink-loop", "directory"])
def test_non_regular_dataset_json_is_one_clear_error(clip_bytes, tmp_path, kind):  # noqa: F811
    root = tmp_path / "data"
    write_samples(root, [("a0", good_members("a0", clip_bytes))])
    (root / "dataset.json").unlink()
    with contextlib.ExitStack() as stack:
        words = _make(kind, root / "dataset.json", stack)
        with pytest.raises(ValueError) as exc:
            bounded(lambda: resolve_source(str(root)), what="resolve_source")
    msg = str(exc.value)
    assert "\n" not in msg and "dataset.json" in msg and words in msg.lower(), msg


def test_oversized_dataset_json_is_refused_unread(clip_bytes, tmp_path):  # noqa: F811
    root = tmp_path / "data"
    write_samples(root, [("a0", good_members("a0", clip_bytes))])
    with open(root / "dataset.json", "r+b") as f:
        f.truncate(1 << 34)  # 16 GiB, sparse: read whole, it would exhaust memory
    with pytest.raises(ValueError, match="dataset.json.*over the cap"):
        bounded(lambda: resolve_source(str(root)), what="resolve_source")


def test_no_regular_shard_left_is_one_clear_error(tmp_path):
    root = tmp_path / "data"
    (root / "shards").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    os.mkfifo(root / "shards" / "shard-000000.tar")
    os.symlink("/dev/zero", root / "shards" / "shard-000001.tar")
    with pytest.raises(ValueError) as exc:
        bounded(lambda: index_source(str(root)), what="index_source")
    msg = str(exc.value)
    assert "\n" not in msg and "no readable shards" in msg and "FIFO" in msg and "character device" in msg


def test_shard_replaced_by_a_fifo_after_indexing(clip_bytes, tmp_path):  # noqa: F811
    """A shard swapped for a FIFO between indexing and reading: its samples are skipped, nothing blocks."""
    from dataload.loader import build_loader

    root = tmp_path / "data"
    shard = write_samples(root, [("a0", good_members("a0", clip_bytes)), ("a1", good_members("a1", clip_bytes))])
    write_samples(root, [("b0", good_members("b0", clip_bytes))], index=1)
    loader = build_loader([str(root)], cfg())
    shard.unlink()
    os.mkfifo(shard)
    with pytest.warns(LoaderWarning, match=r"shard-000000.tar:a\d .*FIFO"):
        batches = bounded(lambda: list(loader))
    assert [m["clip_id"] for b in batches for m in b["meta"]] == ["b0"]
    assert [b["num_samples"] for b in batches] == [0, 0, 1]
    assert all("FIFO" in why for b in batches[:2] for _, why in b["skipped"])
