"""The synthetic video helpers: exact frame counts, times, boundaries, determinism."""

from __future__ import annotations

import av
import numpy as np
import pytest

from dataload.synthetic import (
    FLASH_KINDS,
    Shot,
    Transition,
    layout,
    make_video,
    random_shots,
    render_frames,
    write_srt,
    write_vtt,
)

SHOTS = [Shot("texture", 12, 1), Shot("pan", 12, 2, speed=5), Shot("zoom", 12, 3),
         Shot("objects", 12, 4, flash_at=[5]), Shot("static", 10, 5, blur=2.0)]
TRANS = [Transition("cut"), Transition("fade", 6), Transition("dissolve", 4), Transition("cut")]


def _decode(path):
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
    pts = [float(f.pts * f.time_base) for f in frames]
    return [f.to_ndarray(format="rgb24") for f in frames], [p - pts[0] for p in pts]


def test_truth_layout():
    spans, bounds, kinds, flashes = layout(SHOTS, TRANS)
    assert spans == [(0, 12), (12, 24), (30, 42), (46, 58), (58, 68)]
    assert bounds == [(12, 12), (24, 30), (42, 46), (58, 58)]
    assert kinds == ["cut", "fade", "dissolve", "cut"]
    assert flashes == [51, 52]


@pytest.mark.parametrize("suffix,vfr", [(".mp4", False), (".mp4", True), (".mkv", True)])
def test_make_video_matches_truth(tmp_path, suffix, vfr):
    path = tmp_path / f"v{suffix}"
    truth = make_video(path, SHOTS, TRANS, width=96, height=64, fps=25, vfr=vfr, seed=3)
    assert truth.cuts == [12, 30, 46, 58] and truth.hard_cuts == [12, 58]
    assert truth.transitions == [(24, 30), (42, 46)]
    frames, times = _decode(path)
    assert len(frames) == truth.num_frames == 68
    assert frames[0].shape == (64, 96, 3)
    np.testing.assert_allclose(times, truth.frame_times, atol=1e-6)
    steps = np.diff(times)
    assert (steps > 0).all()
    assert (np.ptp(steps) > 0.005) == vfr
    # Encoded pixels follow the rendered ones (crf 18, veryfast, on tiny noisy frames: a few grey levels).
    ref = list(render_frames(SHOTS, TRANS, 96, 64, seed=3))
    err = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, ref)]
    assert max(err) < 8


def test_boundaries_are_visible_and_motion_is_gradual():
    frames = np.stack(list(render_frames(SHOTS, TRANS, 96, 64, seed=0))).astype(np.float32)
    d = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # d[i] = change from frame i to i+1
    for c in (12, 58):  # hard cuts: the biggest changes outside flashes
        assert d[c - 1] > 20
    within = [d[i - 1] for a, b in [(1, 12), (13, 24), (31, 42), (47, 51), (54, 58)] for i in range(a, b)]
    assert max(within) < 25  # a fast pan changes pixels, but far less than a cut
    # fade through black: the middle of the fade is dark
    assert frames[26:28].mean() < 60
    # flash frames are brighter than their neighbours
    assert frames[51].mean() > frames[49].mean() + 60
    # static shot: identical frames
    assert d[58:67].max() == 0


def test_deterministic_and_seed_dependent():
    a = np.stack(list(render_frames(SHOTS[:2], TRANS[:1], 64, 48, seed=7)))
    b = np.stack(list(render_frames(SHOTS[:2], TRANS[:1], 64, 48, seed=7)))
    c = np.stack(list(render_frames(SHOTS[:2], TRANS[:1], 64, 48, seed=8)))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_arguments():
    with pytest.raises(ValueError, match="transitions"):
        layout(SHOTS, TRANS[:2])
    with pytest.raises(ValueError, match="shot kind"):
        Shot("wobble")
    with pytest.raises(ValueError, match="length"):
        Transition("fade", 1)


def test_random_shots_seeded():
    s1, t1 = random_shots(5, seed=1)
    s2, t2 = random_shots(5, seed=1)
    assert s1 == s2 and t1 == t2 and len(t1) == 4


def test_subtitles(tmp_path):
    write_srt(tmp_path / "a.srt", [(0.0, 1.5, "hello"), (61.25, 3723.004, "two\nlines")])
    assert (tmp_path / "a.srt").read_text() == (
        "1\n00:00:00,000 --> 00:00:01,500\nhello\n\n2\n00:01:01,250 --> 01:02:03,004\ntwo\nlines\n\n")
    write_vtt(tmp_path / "a.vtt", [(0.0, 1.5, "hello")])
    assert (tmp_path / "a.vtt").read_text() == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello\n\n"


@pytest.mark.parametrize("kind", FLASH_KINDS)
def test_flash_kinds_brighten_without_whiting_out(kind):
    """Each kind brightens its frames (and only them); a partial kind leaves part of the picture alone;
    none turns the picture white."""
    shots = [Shot("texture", 12, seed=3, flash_at=(5,), flash_len=2, flash_kind=kind, flash_strength=0.6)]
    frames = np.stack(list(render_frames(shots, [], width=96, height=64))).astype(np.float64)
    plain = np.stack(list(render_frames([Shot("texture", 12, seed=3)], [], width=96, height=64))).astype(np.float64)
    changed = np.abs(frames - plain).max(axis=(1, 2, 3)) > 0
    assert changed.tolist() == [i in (5, 6) for i in range(12)]
    lift = (frames - plain)[5].mean(axis=2)
    assert lift.mean() > 8 and frames[5].std() > 5  # brighter, and still a picture
    if kind in ("spot", "side"):
        assert (np.abs(lift) < 2).mean() > 0.15  # part of the frame is untouched
    else:
        assert (lift > 0).mean() > 0.5
