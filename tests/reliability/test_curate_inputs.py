"""Hostile and careless inputs to `vfm-curate` (run, probe, scenes, report), each with its documented outcome.

Classes: files that are not regular (FIFO, socket, device, symbolic link loop, dangling link, a folder
named like a video) named on the command line, found in a folder or listed in a list file; captions and
list files that are not regular or are huge; file names that are not UTF-8; inputs that expand to
nothing; damaged videos (truncated, bit-flipped, empty, text, a header declaring 30000x30000); symbolic
links to folders; path traversal in list files; bad --set values, flags, --config files and OUT folders.

Outcomes (README's error contract): exit 2 and one line on stderr (no traceback) when the run cannot
run, before anything is written; exit 3 when the run completed and some sources failed, each failed
source in sources.parquet with its reason; nothing written outside OUT; no case hangs (`bounded`).
Every run here is in-process (`call`, --workers 0) on tiny synthetic videos shared by the session.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.ids import NAMESPACE, clip_id, path_text, source_key
from tests.curate.corpus import bit_flipped, clip_rows, comparable_meta, read_shards, reliability_corpus
from tests.reliability.conftest import (
    assert_one_line_error,
    assert_wrote_only_inside,
    bounded,
    call,
    snapshot,
)

KINDS = {  # how each kind of special file is made, and the words its refusal must use
    "fifo": "FIFO (named pipe)",
    "socket": "socket",
    "device": "character device",
    "loop": "symbolic link loop",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return reliability_corpus(tmp_path_factory)


@pytest.fixture
def sockets():
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def make_special(kind: str, path: Path, sockets: list) -> None:
    """A real special file at `path` (no mocks)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cwd = os.getcwd()
        os.chdir(path.parent)  # AF_UNIX paths are limited to ~108 bytes: bind by the short relative name
        try:
            s.bind(path.name)
        finally:
            os.chdir(cwd)
        sockets.append(s)
    elif kind == "device":
        os.symlink("/dev/null", path)  # a character device without needing mknod rights
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "dangling":
        os.symlink("gone-" + path.name, path)
    elif kind == "folder":
        path.mkdir()
        (path / "notes.md").write_text("a folder named like a video, holding no videos\n")
    else:
        raise ValueError(kind)


def run(*args, workers: int = 0, timeout: float = 60):
    with bounded(timeout, "vfm-curate run"):
        return call("vfm-curate", ["run", *map(str, args), "--workers", str(workers)])


def source_rows(out: Path) -> dict[str, dict]:
    return {os.path.basename(r["source"]): r for r in pq.read_table(out / "sources.parquet").to_pylist()}


def assert_done_and_failed(res, out: Path, failed: dict[str, tuple[str, ...]], done=("good.mp4",)) -> dict:
    """Exit 3 (some sources failed), no traceback, and every source accounted with its status and reason."""
    assert "Traceback" not in res.stderr, res.stderr
    assert res.rc == (3 if failed else 0), (res.rc, res.stderr, res.stdout)
    rows = source_rows(out)
    assert set(rows) == set(failed) | set(done), rows
    for name in done:
        assert rows[name]["status"] == "done" and rows[name]["reason"] is None, rows[name]
    for name, words in failed.items():
        assert rows[name]["status"] == "failed", rows[name]
        for w in words:
            assert w.lower() in rows[name]["reason"].lower(), (w, rows[name]["reason"])
        if not any("empty file" in w for w in words):  # a FIFO or device is never taken for an empty file
            assert "empty file" not in rows[name]["reason"]
    if failed:
        assert res.stdout.strip().splitlines()[-1].startswith(f"{len(failed)} of {len(rows)} sources failed")
    return rows


# ------------------------------------------------------------------ files that are not regular files

CMDLINE_WORDS = {**{k: ("is a " + v,) for k, v in KINDS.items()}, "loop": ("is a symbolic link loop",),
                 "dangling": ("input not found",), "folder": ("no videos found in",)}
FOLDER_WORDS = {**{k: ("video is a " + v,) for k, v in KINDS.items()}, "loop": ("symbolic link loop",),
                "dangling": ("not found",)}
LIST_WORDS = {**{k: ("ingest: is a " + v, "listed in") for k, v in KINDS.items()},
              "loop": ("ingest: is a symbolic link loop",), "dangling": ("ingest: not found", "listed in"),
              "folder": ("ingest: no videos found", "listed in")}


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "loop", "dangling", "folder"])
def test_special_file_named_on_the_command_line_stops_before_work(kind, corpus, tmp_path, sockets):
    special = tmp_path / "odd.mp4"
    make_special(kind, special, sockets)
    res = run(corpus["good"], special, "--out", tmp_path / "out")
    line = assert_one_line_error(res, 2, *CMDLINE_WORDS[kind])
    assert "odd.mp4" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "loop", "dangling", "folder"])
def test_special_file_found_in_a_folder_fails_its_source(kind, corpus, tmp_path, sockets):
    videos = tmp_path / "videos"
    videos.mkdir()
    os.link(corpus["good"], videos / "good.mp4")
    make_special(kind, videos / "odd.mp4", sockets)
    res = run(videos, "--out", tmp_path / "out")
    if kind == "folder":  # a folder named like a video is walked like any folder: nothing to curate there
        assert_done_and_failed(res, tmp_path / "out", {})
    else:
        assert_done_and_failed(res, tmp_path / "out", {"odd.mp4": FOLDER_WORDS[kind]})


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "loop", "dangling", "folder"])
def test_special_file_in_a_list_file_fails_its_source(kind, corpus, tmp_path, sockets):
    make_special(kind, tmp_path / "odd.mp4", sockets)
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# mine\n{corpus['good']}\nodd.mp4\n")
    res = run(listing, "--out", tmp_path / "out")
    rows = assert_done_and_failed(res, tmp_path / "out", {"odd.mp4": LIST_WORDS[kind]})
    assert str(listing) in rows["odd.mp4"]["reason"]


@pytest.mark.parametrize("command,kind", [("probe", "fifo"), ("probe", "socket"), ("probe", "device"),
                                          ("probe", "loop"), ("probe", "folder"), ("scenes", "fifo"),
                                          ("scenes", "folder")])
def test_probe_and_scenes_refuse_what_is_not_a_regular_file(command, kind, tmp_path, sockets):
    special = tmp_path / "odd.mp4"
    make_special(kind, special, sockets)
    with bounded(30, f"vfm-curate {command}"):
        res = call("vfm-curate", [command, special])
    words = {"folder": "directory", "loop": "symbolic link loop"}.get(kind, KINDS.get(kind))
    assert "odd.mp4" in assert_one_line_error(res, 2, words)


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_caption_beside_a_video_is_read_as_a_regular_file_with_a_cap(kind, corpus, tmp_path, sockets):
    videos = tmp_path / "videos"
    videos.mkdir()
    os.link(corpus["good"], videos / "good.mp4")
    os.link(corpus["vids"] / "a.mp4", videos / "a.mp4")
    if kind == "fifo":
        os.mkfifo(videos / "a.srt")
    else:
        with open(videos / "a.srt", "wb") as f:  # sparse: 17 MiB declared, nothing on disk
            f.truncate(17 << 20)
    res = run(videos, "--out", tmp_path / "out")
    words = ("caption: ", "FIFO (named pipe)") if kind == "fifo" else ("caption: ", "over the cap")
    assert_done_and_failed(res, tmp_path / "out", {"a.mp4": words})


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_list_file_is_read_as_a_regular_file_with_a_cap(kind, tmp_path):
    listing = tmp_path / "inputs.txt"
    if kind == "fifo":
        os.mkfifo(listing)
    else:
        with open(listing, "wb") as f:
            f.truncate(65 << 20)
    res = run(listing, "--out", tmp_path / "out")
    assert_one_line_error(res, 2, "inputs.txt", "FIFO" if kind == "fifo" else "over the cap")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ file names that are not UTF-8

@pytest.mark.parametrize("name", ["/data/a.mp4", "vidéo/ünïcode clip.mp4", "s3://bucket/x y.mp4", "日本/🎬.mkv",
                                  "../../x.mp4"])
def test_ids_of_utf8_paths_are_unchanged(name):
    """Ids hash the path's bytes now; for every UTF-8 path they equal the ids of the text uuid5."""
    assert clip_id(name, 3, 40) == str(uuid.uuid5(NAMESPACE, f"{name}#3-40"))
    assert source_key(name) == str(uuid.uuid5(NAMESPACE, f"source:{name}"))
    assert path_text(name) == name


def _latin1_name(folder: Path, data: bytes, stem: bytes = b"caf\xe9") -> str:
    raw = os.fsencode(folder) + b"/" + stem + b".mp4"
    with open(raw, "wb") as f:
        f.write(data)
    return os.fsdecode(raw)


@pytest.mark.parametrize("given", ["folder", "file", "list"])
def test_non_utf8_file_name_is_curated_like_any_other(given, corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    name = _latin1_name(videos, corpus["good"].read_bytes())
    if given == "list":
        listing = tmp_path / "inputs.txt"
        listing.write_bytes(os.fsencode(name) + b"\n")
        inp = listing
    else:
        inp = videos if given == "folder" else name
    out = tmp_path / "out"
    res = run(inp, "--out", out)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    (row,) = pq.read_table(out / "sources.parquet").to_pylist()
    text = path_text(name)
    assert row["status"] == "done" and row["source"] == text and text.endswith("caf\\xe9.mp4")
    clips = clip_rows(out)
    assert {c["source"] for c in clips.values()} == {text}
    for c in clips.values():  # ids from the name's bytes
        assert c["clip_id"] == clip_id(name, c["start_frame"], c["end_frame"])
    got = comparable_meta(read_shards(out))
    ref = comparable_meta(read_shards(corpus["ref_one"]))
    assert len(got) == len(ref) >= 1 and all(v[2] for v in got.values())
    for meta, _, _ in got.values():  # the shard's JSON holds the same string form as the parquet row
        assert json.loads(meta)["source"] == text


def test_non_utf8_name_of_a_broken_file_fails_with_its_reason(corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    os.link(corpus["good"], videos / "good.mp4")
    _latin1_name(videos, b"not a video\n" * 40, stem=b"bad\xff")
    res = run(videos, "--out", tmp_path / "out")
    rows = assert_done_and_failed(res, tmp_path / "out", {"bad\\xff.mp4": ("not a readable video", "bad\\xff.mp4")})
    assert "bad\\xff.mp4" in (tmp_path / "out" / "report.md").read_text()
    assert rows


def test_non_utf8_out_folder(corpus, tmp_path):
    out = os.fsdecode(os.fsencode(tmp_path) + b"/out\xe9")
    res = run(corpus["one"], "--out", out)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    assert "out\\xe9" in Path(out, "report.md").read_text()
    assert comparable_meta(read_shards(Path(out))) == comparable_meta(read_shards(corpus["ref_one"]))


# ------------------------------------------------------------------ inputs that expand to nothing, missing inputs

@pytest.mark.parametrize("what", ["empty folder", "folder of other files", "glob of other files", "comment-only list"])
def test_inputs_with_no_videos_stop_before_work(what, corpus, tmp_path):
    if what == "empty folder":
        (tmp_path / "in").mkdir()
        item = tmp_path / "in"
    elif what == "folder of other files":
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "notes.md").write_text("x")
        (tmp_path / "in" / "clip.srt").write_text("x")
        item = tmp_path / "in"
    elif what == "glob of other files":
        (tmp_path / "a.md").write_text("x")
        item = tmp_path / "*.md"
    else:
        (tmp_path / "in.txt").write_text("# nothing yet\n\n   \n")
        item = tmp_path / "in.txt"
    res = run(corpus["good"], item, "--out", tmp_path / "out")
    assert_one_line_error(res, 2, "no videos found in", str(item))
    assert not (tmp_path / "out").exists()


def test_missing_input_on_the_command_line_stops_before_work(corpus, tmp_path):
    res = run(corpus["good"], tmp_path / "nope.mp4", "--out", tmp_path / "out")
    assert_one_line_error(res, 2, "input not found", "nope.mp4")
    assert not (tmp_path / "out").exists()


def test_list_file_naming_missing_files_records_each(corpus, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"gone1.mp4\n{corpus['good']}\n/nowhere/gone2.mp4\n")
    res = run(listing, "--out", tmp_path / "out")
    assert_done_and_failed(res, tmp_path / "out", {"gone1.mp4": ("not found",), "gone2.mp4": ("not found",)})
    # once the files exist, the rerun retries exactly those
    os.link(corpus["good"], tmp_path / "gone1.mp4")
    res = run(listing, "--out", tmp_path / "out")
    assert res.rc == 3 and "2 processed now, 1 resumed" in res.stdout
    assert source_rows(tmp_path / "out")["gone1.mp4"]["status"] == "done"


# ------------------------------------------------------------------ damaged videos (these already passed: keep them)

@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_video_fails_its_source(fraction, corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    os.link(corpus["good"], videos / "good.mp4")
    data = corpus["good"].read_bytes()
    (videos / "cut.mp4").write_bytes(data[: int(len(data) * fraction)])
    assert_done_and_failed(run(videos, "--out", tmp_path / "out"), tmp_path / "out", {"cut.mp4": ("probe: ",)})


def test_bit_flipped_video_is_kept_and_the_report_says_it_had_decode_errors(corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "flipped.mp4").write_bytes(bit_flipped(corpus["good"].read_bytes()))
    res = run(videos, "--out", tmp_path / "out")
    assert res.rc == 0, res.stderr
    row = source_rows(tmp_path / "out")["flipped.mp4"]
    assert row["status"] == "done" and row["decode_errors"] > 0, row
    report = (tmp_path / "out" / "report.md").read_text()
    assert (f"1 source had decode errors ({row['decode_errors']} corrupt frames or packets skipped): "
            f"{videos / 'flipped.mp4'} ({row['decode_errors']})") in report


@pytest.mark.parametrize("seed", [1, 2])
def test_randomly_bit_flipped_videos_are_each_accounted(seed, corpus, tmp_path):
    import random

    rng = random.Random(seed)
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        data = bytearray(corpus["good"].read_bytes())
        for _ in range(30):
            data[rng.randrange(40, len(data))] ^= 1 << rng.randrange(8)
        (videos / f"f{i}.mp4").write_bytes(bytes(data))
    res = run(videos, "--out", tmp_path / "out")
    assert res.rc in (0, 3) and "Traceback" not in res.stderr, res.stderr
    rows = source_rows(tmp_path / "out")
    assert set(rows) == {"f0.mp4", "f1.mp4", "f2.mp4"}
    for r in rows.values():
        assert r["status"] in ("done", "failed") and (r["status"] == "done") == (r["reason"] is None), r


@pytest.mark.parametrize("what,words", [("empty", ("empty file (0 bytes)",)),
                                        ("text", ("not a readable video",)),
                                        ("huge30000", ("probe: ",)),
                                        ("huge16000", ("16000x16000", "probe.max_pixels"))])
def test_empty_text_and_huge_resolution_files_fail_cleanly(what, words, corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    os.link(corpus["good"], videos / "good.mp4")
    name = "bad.y4m" if what.startswith("huge") else "bad.mp4"
    if what == "empty":
        data = b""
    elif what == "text":
        data = b"this is not a video\n" * 50
    else:  # a 5 kB file whose header declares a picture of 30000x30000 (or 16000x16000) pixels
        side = int(what[4:])
        data = f"YUV4MPEG2 W{side} H{side} F25:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + b"\x80" * 5000
    (videos / name).write_bytes(data)
    assert_done_and_failed(run(videos, "--out", tmp_path / "out"), tmp_path / "out", {name: words})


def test_symlinks_to_folders(corpus, tmp_path):
    """Named on the command line, a link to a folder is expanded; inside a walked folder it is not
    followed (no loops, no video found twice under two names)."""
    os.symlink(corpus["one"], tmp_path / "linked")
    res = run(tmp_path / "linked", "--out", tmp_path / "out1")
    assert res.rc == 0 and list(source_rows(tmp_path / "out1")) == ["good.mp4"], res.stderr
    walk = tmp_path / "walk"
    walk.mkdir()
    os.link(corpus["vids"] / "a.mp4", walk / "a.mp4")
    os.symlink(corpus["one"], walk / "elsewhere")
    os.symlink(walk, walk / "loop")  # a link to an ancestor
    res = run(walk, "--out", tmp_path / "out2")
    assert res.rc == 0 and list(source_rows(tmp_path / "out2")) == ["a.mp4"], res.stderr


def test_path_traversal_in_a_list_file_writes_only_inside_out(corpus, tmp_path):
    sandbox = tmp_path / "sandbox"
    (sandbox / "deep" / "er").mkdir(parents=True)
    os.link(corpus["good"], sandbox / "good.mp4")
    listing = sandbox / "deep" / "er" / "inputs.txt"
    listing.write_text("../../good.mp4\n../../../../../../../../../../../tmp/../etc/hostname.mp4\n"
                       "../../deep/../good.mp4\n")
    before = snapshot(sandbox)
    res = run(listing, "--out", sandbox / "out")
    assert res.rc == 3 and "Traceback" not in res.stderr, res.stderr
    assert_wrote_only_inside(before, snapshot(sandbox), "out")
    rows = pq.read_table(sandbox / "out" / "sources.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["done", "failed", "done"]  # the same file under two names is two sources


# ------------------------------------------------------------------ config values, flags, OUT folders

@pytest.mark.parametrize("setting,words", [
    ("filters.min_motoin=1", ("unknown config key 'filters.min_motoin'",)),
    ("filters.min_motion=fast", ("filters.min_motion", "needs a number")),
    ("filters.min_motion=1e400", ("filters.min_motion", "finite")),
    ("filters.min_motion=1.0e+400", ("filters.min_motion", "finite")),
    ("filters.min_motion=.nan", ("filters.min_motion", "finite")),
    ("filters.min_motion=nan", ("filters.min_motion", "finite")),
    ("filters.max_clip_s=.inf", ("filters.max_clip_s", "finite")),
    ("filters.min_brightness=-inf", ("filters.min_brightness", "finite")),
    ("write.max_clips_per_shard=1.5", ("write.max_clips_per_shard", "integer")),
    ("captions.timed_text=maybe", ("captions.timed_text", "true or false")),
    ("filters=3", ("config section 'filters' must be a mapping",)),
    ("filters.min_motion", ("--set needs key=value",)),
    ("probe.max_pixels=0", ("probe.max_pixels",)),
])
def test_bad_set_values_stop_before_work(setting, words, corpus, tmp_path):
    res = run(corpus["good"], "--out", tmp_path / "out", "--set", setting)
    assert_one_line_error(res, 2, *words)
    assert not (tmp_path / "out").exists()


def test_numbers_are_read_as_users_write_them(corpus, tmp_path):
    from curate.config import load_config

    cfg = load_config(None, ["filters.min_motion=1e-4", "filters.max_jitter=2", "split.min_clip_s= 1.5 "])
    assert (cfg.filters.min_motion, cfg.filters.max_jitter, cfg.split.min_clip_s) == (1e-4, 2.0, 1.5)


@pytest.mark.parametrize("workers,words", [("-1", ("--workers must be 0",)), ("-8", ("--workers must be 0",)),
                                           ("two", ("invalid int value",))])
def test_bad_workers(workers, words, corpus, tmp_path):
    with bounded(30):
        res = call("vfm-curate", ["run", corpus["good"], "--out", tmp_path / "out", "--workers", workers])
    assert_one_line_error(res, 2, *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["file", "fifo", "other config", "damaged config", "foreign folder"])
def test_out_that_is_not_ours_is_refused(what, corpus, tmp_path):
    out = tmp_path / "out"
    words: tuple[str, ...]
    if what == "file":
        out.write_text("x")
        words = ("exists and is not a folder",)
    elif what == "fifo":
        os.mkfifo(out)
        words = ("exists and is not a folder",)
    elif what in ("other config", "damaged config"):
        out.mkdir()
        (out / "config.yaml").write_text("filters: {min_motion: 0.5}\n" if what == "other config" else "{: [\n")
        words = ("holds a run with a different config",)
    else:
        out.mkdir()
        (out / "thesis.tex").write_text("x")
        words = ("is not empty and holds no curation run",)
    before = snapshot(tmp_path)
    res = run(corpus["good"], "--out", out)
    assert_one_line_error(res, 2, *words)
    assert snapshot(tmp_path) == before  # nothing written: not even a lock


@pytest.mark.parametrize("what,words", [("missing", ("config file not found",)), ("fifo", ("FIFO",)),
                                        ("huge", ("over the cap",)), ("not yaml", ("not valid YAML",)),
                                        ("not utf-8", ("not UTF-8",))])
def test_bad_config_file(what, words, corpus, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    if what == "fifo":
        os.mkfifo(cfg)
    elif what == "huge":
        with open(cfg, "wb") as f:
            f.truncate(2 << 20)
    elif what == "not yaml":
        cfg.write_text("filters: [\n")
    elif what == "not utf-8":
        cfg.write_bytes(b"filters:\n  min_motion: 0.\xff\n")
    res = run(corpus["good"], "--out", tmp_path / "out", "--config", cfg)
    assert_one_line_error(res, 2, *words)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the report

def test_console_summary_and_report_give_the_same_throughput(corpus, tmp_path):
    res = run(corpus["vids"], "--out", tmp_path / "out")
    assert res.rc == 0, res.stderr
    console = res.stdout.splitlines()[0].rsplit("; ", 1)[1]
    assert console.endswith("video hours per wall hour")
    figure = console.split()[0]
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"- video hours per wall hour: {figure}\n" in report, (console, report)
