"""Ingest: files, folders, globs, list files, fsspec URLs, captions beside videos, missing inputs."""

from __future__ import annotations

import os

import fsspec
import pytest

from curate.errors import CurateError
from curate.stages.ingest.config import IngestConfig
from curate.stages.ingest.expand import expand_inputs


@pytest.fixture()
def tree(tmp_path):
    for rel in ["a.mp4", "a.srt", "sub/b.MKV", "sub/deeper/c.webm", "sub/deeper/c.vtt", "notes.md", "z.avi"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def test_folder_is_recursive_and_sorted(tree):
    got = expand_inputs([str(tree)], IngestConfig())
    rel = [os.path.relpath(s.source, tree) for s in got]
    assert rel == ["a.mp4", "z.avi", "sub/b.MKV", "sub/deeper/c.webm"]
    assert got[0].caption_path == str(tree / "a.srt")
    assert got[3].caption_path == str(tree / "sub/deeper/c.vtt")
    assert got[1].caption_path is None


def test_glob_list_and_dedup(tree):
    listing = tree / "inputs.txt"
    listing.write_text("# my videos\nz.avi\n\nsub/b.MKV\n")
    got = expand_inputs([str(tree / "*.mp4"), str(listing), str(tree / "a.mp4")], IngestConfig())
    assert [os.path.basename(s.source) for s in got] == ["a.mp4", "z.avi", "b.MKV"]


def test_missing_inputs_stop_before_work(tree):
    with pytest.raises(CurateError, match="input not found: .*nope.mp4"):
        expand_inputs([str(tree / "a.mp4"), str(tree / "nope.mp4")], IngestConfig())
    with pytest.raises(CurateError, match="matches nothing"):
        expand_inputs([str(tree / "*.mov")], IngestConfig())
    # a list file's missing entry does not stop the run: it becomes a source that fails with the reason
    listing = tree / "list.txt"
    listing.write_text("gone.mp4\na.mp4\n")
    got = expand_inputs([str(listing)], IngestConfig())
    assert [(os.path.basename(s.source), s.error) for s in got] == [
        ("gone.mp4", f"ingest: not found (listed in {listing})"), ("a.mp4", None)]
    assert got[0].local_path is None


def test_inputs_that_expand_to_nothing_stop_before_work(tree):
    (tree / "empty").mkdir()
    (tree / "comments.txt").write_text("# nothing here\n\n")
    for item, words in [(tree / "empty", "no videos found in"), (tree / "*.md", "no videos found in"),
                        (tree / "comments.txt", "no videos found in")]:
        with pytest.raises(CurateError, match=words):
            expand_inputs([str(tree / "a.mp4"), str(item)], IngestConfig())


def test_non_regular_inputs(tree):
    os.mkfifo(tree / "pipe.mp4")
    with pytest.raises(CurateError, match=r"is a FIFO \(named pipe\), not a regular file or folder"):
        expand_inputs([str(tree / "pipe.mp4")], IngestConfig())
    os.symlink("loop.mp4", tree / "loop.mp4")
    with pytest.raises(CurateError, match="symbolic link loop"):
        expand_inputs([str(tree / "loop.mp4")], IngestConfig())
    # found in a folder: a source like any other (the probe stage fails it, naming its kind)
    got = expand_inputs([str(tree)], IngestConfig())
    assert {"pipe.mp4", "loop.mp4"} <= {os.path.basename(s.source) for s in got}
    # a file whose name holds glob characters is taken as it is when it exists
    (tree / "odd[1].mp4").write_bytes(b"x")
    assert [s.source for s in expand_inputs([str(tree / "odd[1].mp4")], IngestConfig())] == [str(tree / "odd[1].mp4")]


def test_fsspec_urls():
    fs = fsspec.filesystem("memory")
    fs.pipe("/vids/one.mp4", b"1")
    fs.pipe("/vids/one.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    fs.pipe("/vids/two.mkv", b"2")
    got = expand_inputs(["memory:///vids"], IngestConfig())
    assert [s.source for s in got] == ["memory:///vids/one.mp4", "memory:///vids/two.mkv"]
    assert got[0].local_path is None and got[0].caption_path == "memory:///vids/one.srt"
    with pytest.raises(CurateError, match="input not found"):
        expand_inputs(["memory:///vids/three.mp4"], IngestConfig())
