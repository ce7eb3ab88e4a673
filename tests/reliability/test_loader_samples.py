"""Hostile samples in curated shards: a clip JSON with a non-finite number anywhere, a wrong type or an
absurd size is skipped when the shard is indexed (the planner only sees finite, sane numbers); a clip whose
video bytes are garbage or hostile is skipped when it is loaded. Either way the sample is counted, named in
a one-line LoaderWarning, and the other samples are still delivered."""

from __future__ import annotations

import json

import pytest

from tests.reliability.test_loader_common import (  # noqa: F401  (fixture)
    CLIP_FRAMES,
    CLIP_SIZE,
    cfg,
    clip_bytes,
    good_members,
    meta,
    run_loader,
    write_samples,
)

# (case id, the clip JSON's text with one value replaced, a word the reason must hold)
BAD_JSON = [
    ("width-nan", lambda m: m.replace('"width": 32', '"width": NaN'), "NaN"),
    ("height-infinity", lambda m: m.replace('"height": 32', '"height": Infinity'), "Infinity"),
    ("num_frames-neg-infinity", lambda m: m.replace('"num_frames": 6', '"num_frames": -Infinity'), "Infinity"),
    ("fps-1e400", lambda m: m.replace('"fps": 8.0', '"fps": 1e400'), "infinity"),
    ("start_s-nan", lambda m: m.replace('"start_s": 0.0', '"start_s": NaN'), "NaN"),
    ("end_s-neg-1e400", lambda m: m.replace('"end_s": 0.75', '"end_s": -1e400'), "infinity"),
    ("nested-embedding-nan", lambda m: m[:-1] + ', "embedding": [0.5, NaN, 1.0]}', "NaN"),
    ("nested-windows-infinity", lambda m: m[:-1] + ', "caption_windows": [{"start_s": Infinity}]}', "Infinity"),
    ("width-string", lambda m: m.replace('"width": 32', '"width": "32"'), "width"),
    ("height-bool", lambda m: m.replace('"height": 32', '"height": true'), "height"),
    ("num_frames-list", lambda m: m.replace('"num_frames": 6', '"num_frames": [6]'), "num_frames"),
    ("fps-null", lambda m: m.replace('"fps": 8.0', '"fps": null'), "fps"),
    ("width-zero", lambda m: m.replace('"width": 32', '"width": 0'), "width"),
    ("height-negative", lambda m: m.replace('"height": 32', '"height": -32'), "height"),
    ("width-absurd", lambda m: m.replace('"width": 32', '"width": 1000000000000'), "width"),
    ("num_frames-fraction", lambda m: m.replace('"num_frames": 6', '"num_frames": 6.5'), "num_frames"),
    ("fps-zero", lambda m: m.replace('"fps": 8.0', '"fps": 0'), "fps"),
    ("fps-subnormal", lambda m: m.replace('"fps": 8.0', '"fps": 5e-324'), "fps"),
    ("clip_id-number", lambda m: m.replace('"clip_id": "bad"', '"clip_id": 7'), "clip_id"),
    ("missing-height", lambda m: m.replace('"height": 32, ', ''), "height"),
    ("deep-nesting", lambda m: m[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}", "nested"),
    ("huge-integer", lambda m: m.replace('"start_frame": 0', '"start_frame": ' + "9" * 5000), "JSON"),
    ("not-utf8", lambda m: m.replace('"caption of bad"', '"caption \xff\xfe"'), "UTF-8"),
    ("not-an-object", lambda m: "[" + m + "]", "object"),
]


@pytest.mark.parametrize("case,edit,reason", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_clip_json_is_skipped_at_indexing(clip_bytes, tmp_path, case, edit, reason):  # noqa: F811
    text = json.dumps(meta("bad"))
    bad_json = edit(text)
    assert bad_json != text
    members = dict(good_members("bad", clip_bytes), json=bad_json.encode("utf-8", "surrogateescape")
                   if case != "not-utf8" else bad_json.encode("latin-1"))
    write_samples(tmp_path, [("good1", good_members("good1", clip_bytes)), ("bad", members),
                             ("good2", good_members("good2", clip_bytes))])
    run = run_loader([tmp_path])
    assert run.keys == ["good1", "good2"]
    assert [b["num_samples"] for b in run.batches] == [1, 1]  # left out of the plan: no empty batch
    ((name, why),) = run.loader.skipped
    assert name.endswith(":bad") and reason.lower() in why.lower(), why
    assert ":bad (" in run.text


def _y4m(side: int) -> bytes:
    """A raw YUV4MPEG2 stream whose header declares side x side frames (only 4 KiB of them follow)."""
    return f"YUV4MPEG2 W{side} H{side} F8:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + b"\x80" * 4096


def _mp4_without_frames(tmp_path) -> bytes:
    import av

    p = tmp_path / "empty.avi"  # AVI keeps a video stream that has no packets (MP4 drops the track)
    with av.open(str(p), "w", format="avi") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    return p.read_bytes()


def _audio_only(tmp_path) -> bytes:
    import av
    import numpy as np

    p = tmp_path / "audio.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("aac", rate=8000)
        s.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return p.read_bytes()


BAD_VIDEO = {
    "garbage": lambda clip, tmp: b"\x00garbage\xff" * 300,
    "empty": lambda clip, tmp: b"",
    "first-half": lambda clip, tmp: clip[: len(clip) // 2],
    "header-only": lambda clip, tmp: clip[:64],
    "huge-declared-resolution": lambda clip, tmp: _y4m(100_000),  # FFmpeg itself refuses this one
    "over-cap-resolution": lambda clip, tmp: _y4m(8192),  # 67 Mpixel: refused by max_frame_pixels
    "zero-frames": lambda clip, tmp: _mp4_without_frames(tmp),
    "audio-only": lambda clip, tmp: _audio_only(tmp),
    "text": lambda clip, tmp: b"#!/bin/sh\necho not a video\n" * 20,
}


@pytest.mark.parametrize("case", list(BAD_VIDEO))
def test_bad_video_bytes_skip_their_sample_when_loaded(clip_bytes, tmp_path, case):  # noqa: F811
    """batch_size 1: the bad clip's batch is yielded (equal batch counts on every rank) but empty."""
    bad = dict(good_members("bad", clip_bytes), mp4=BAD_VIDEO[case](clip_bytes, tmp_path))
    write_samples(tmp_path / "data", [("good1", good_members("good1", clip_bytes)), ("bad", bad),
                                      ("good2", good_members("good2", clip_bytes))])
    run = run_loader([tmp_path / "data"])
    assert run.keys == ["good1", "good2"]
    assert [b["num_samples"] for b in run.batches] == [1, 0, 1]
    empty = run.batches[1]
    assert empty["video"].shape == (0, 4, 3, CLIP_SIZE, CLIP_SIZE) and empty["pad_mask"].shape == (0,)
    assert len(empty["skipped"]) == 1 and empty["skipped"][0][0].endswith(":bad")
    assert run.skipped_names.endswith(":bad") and ":bad (" in run.text
    if case == "over-cap-resolution":
        assert "max_frame_pixels" in empty["skipped"][0][1]


def test_frame_over_max_frame_pixels_is_refused_before_converting(clip_bytes, tmp_path):  # noqa: F811
    """The JSON claims a tiny clip; the stream's real frames are over the configured cap."""
    lying = dict(good_members("liar", clip_bytes, width=8, height=8))
    write_samples(tmp_path, [("good", good_members("good", clip_bytes, width=8, height=8)), ("liar", lying)])
    run = run_loader([tmp_path], cfg(max_frame_pixels=CLIP_SIZE * CLIP_SIZE - 1))
    assert run.keys == [] and [b["num_samples"] for b in run.batches] == [0, 0]
    assert "max_frame_pixels" in run.loader.skipped[0][1]
    # The same data under the default cap loads.
    assert run_loader([tmp_path]).keys == ["good", "liar"]


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_partly_bad_batch_delivers_the_rest_consistently(clip_bytes, tmp_path, remainder):  # noqa: F811
    samples = [(f"k{i}", good_members(f"k{i}", clip_bytes)) for i in range(5)]
    samples[1] = ("k1", dict(samples[1][1], mp4=b"garbage" * 10))
    write_samples(tmp_path, samples)
    run = run_loader([tmp_path], cfg(batch_size=3, remainder=remainder))
    first = run.batches[0]
    assert first["num_samples"] == 2 and [m["clip_id"] for m in first["meta"]] == ["k0", "k2"]
    assert first["pad_mask"].tolist() == [True, True] and first["caption"] == ["caption of k0", "caption of k2"]
    if remainder == "pad":  # [k3, k4, k3 (repeat)]: the repeat is masked out
        assert run.batches[1]["pad_mask"].tolist() == [True, True, False]
    assert set(run.keys) == {"k0", "k2", "k3", "k4"} if remainder == "pad" else {"k0", "k2"}


def test_bad_sample_with_loader_workers(clip_bytes, tmp_path):  # noqa: F811
    """Skips travel back from worker processes; the batches still come in plan order."""
    samples = [(f"k{i}", good_members(f"k{i}", clip_bytes)) for i in range(4)]
    samples[2] = ("k2", dict(samples[2][1], mp4=b"\x00" * 999))
    write_samples(tmp_path, samples)
    run = run_loader([tmp_path], cfg(num_workers=2))
    assert run.keys == ["k0", "k1", "k3"] and [b["num_samples"] for b in run.batches] == [1, 1, 0, 1]
    assert run.skipped_names.endswith(":k2")


def test_sample_frames_and_counts_survive(clip_bytes, tmp_path):  # noqa: F811
    """A control: the good clip really decodes to its bucket (so the cases above can fail)."""
    write_samples(tmp_path, [("only", good_members("only", clip_bytes))])
    run = run_loader([tmp_path])
    (b,) = run.batches
    assert b["num_samples"] == 1 and b["video"].shape == (1, 4, 3, CLIP_SIZE, CLIP_SIZE)
    assert int(b["video"].float().std()) > 0 and CLIP_FRAMES >= 4 and not run.loader.skipped
