"""Whole-video luma reads decoded in key-frame ranges: the same frames, times and scan as a sequential
pass (closed and open GOPs, variable frame rate, real videos), and a fall-back on anything unusual."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataload.backends.keyframe_ranges import _Survey, plan, read_luma_ranges, survey
from dataload.reader import VideoReader
from dataload.synthetic import Shot, Transition, render_frames, vfr_times, write_video

SIZE = (-1, 48)


def _frames(n: int = 96):
    shots = [Shot("pan", num_frames=n // 2, seed=3), Shot("objects", num_frames=n - n // 2, seed=4)]
    return list(render_frames(shots, [Transition("cut")], width=96, height=64, seed=5))


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gops")
    frames = _frames()
    x264 = "keyint=16:min-keyint=16:scenecut=0:bframes=3"
    out = {}
    out["closed.mp4"] = folder / "closed.mp4"
    write_video(out["closed.mp4"], frames, options={"x264-params": x264})
    out["open_gop.mkv"] = folder / "open_gop.mkv"  # leading B-pictures reference the previous group
    write_video(out["open_gop.mkv"], frames, options={"x264-params": x264 + ":open-gop=1"})
    out["vfr.mp4"] = folder / "vfr.mp4"
    write_video(out["vfr.mp4"], frames, times_s=vfr_times(len(frames), 25, seed=2), options={"x264-params": x264})
    return out


def _sequential(path, fast: bool):
    """The reference: one decoder, one pass (threads=1 never splits)."""
    with VideoReader(path, backend="pyav", threads=1, fast_luma=fast) as r:
        return r.read(luma=True, size=SIZE).numpy(), r._pyav.scan, r.decode_errors


def _check_same(path, fast: bool) -> None:
    want, want_scan, _ = _sequential(path, fast)
    with VideoReader(path, backend="pyav", fast_luma=fast) as r:
        got = read_luma_ranges(r._pyav, SIZE)
        assert got is not None, f"{path.name}: expected a key-frame range read"
        scan = r._pyav.scan
        assert np.array_equal(got, want), path.name
        assert np.array_equal(scan.times, want_scan.times), path.name
        for key in ("last_duration_s", "decode_errors", "coded_width", "coded_height", "rotation", "sar",
                    "first_pts"):
            assert getattr(scan, key) == getattr(want_scan, key), (path.name, key)
        assert np.array_equal(r.timestamps(), want_scan.times)  # no second pass needed
        assert r.decode_errors == 0


@pytest.mark.parametrize("fast", [False, True])
def test_ranges_equal_a_sequential_pass(gop_videos, fast):
    for path in gop_videos.values():
        _check_same(path, fast)


@pytest.mark.real_videos
def test_ranges_equal_a_sequential_pass_on_real_videos(real_videos_dir):
    for name in ("bikes.mp4", "nasa_13013.mp4", "flipping_a_pancake.mkv"):
        _check_same(real_videos_dir / name, fast=True)


def test_public_read_uses_ranges_and_fills_out(gop_videos):
    path = gop_videos["closed.mp4"]
    want, _, _ = _sequential(path, False)
    buf = torch.zeros((len(want) + 5,) + want.shape[1:], dtype=torch.uint8)
    with VideoReader(path, backend="pyav") as r:
        got = r.read(luma=True, size=SIZE, out=buf)
        assert r._pyav.scan is not None
    assert got.data_ptr() == buf.data_ptr() and torch.equal(got, torch.from_numpy(want))


def test_damaged_video_falls_back_to_the_sequential_pass(gop_videos, tmp_path):
    data = bytearray(gop_videos["closed.mp4"].read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 2
    for pos in rng.integers(mid - len(data) // 4, mid + len(data) // 4, 60):
        data[int(pos)] ^= 0xFF
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with VideoReader(path, backend="pyav") as ref:  # iter_frames streams: never split
        want = [(i, t) for i, t, _ in ref.iter_frames(luma=True, size=SIZE)]
        errors = ref.decode_errors
    with VideoReader(path, backend="pyav") as r:
        assert read_luma_ranges(r._pyav, SIZE) is None  # a flagged or failed picture: not split
        got = r.read(luma=True, size=SIZE)
        assert r.decode_errors == errors and errors > 0
        assert got.shape[0] == len(want) and r.timestamps().tolist() == [t for _, t in want]
    # (not pixels: FFmpeg's concealment of damaged pictures varies with frame-thread timing)


def test_single_group_videos_are_not_split(gop_videos, tmp_path):
    path = tmp_path / "one_gop.mp4"
    write_video(path, _frames(40))  # default keyint: one key frame
    with VideoReader(path, backend="pyav") as r:
        assert r._pyav.indexed_single_keyframe()
        assert read_luma_ranges(r._pyav, SIZE) is None
    with VideoReader(gop_videos["closed.mp4"], backend="pyav") as r:
        assert not r._pyav.indexed_single_keyframe()
    s = survey(str(gop_videos["closed.mp4"]), 0)
    assert [k[0] for k in s.keys] == list(range(0, 96, 16))


def test_plan_splits_near_the_middle_and_refuses_short_ranges():
    pts = np.arange(100, dtype=np.int64) * 10
    s = _Survey(pts=pts, keys=[(i, i * 10, i * 10) for i in range(0, 100, 20)], packets=100)
    ranges = plan(s, 2)
    assert [(r.lo, r.hi, r.expect) for r in ranges] == [(None, 400, 40), (400, None, 60)]
    long = _Survey(pts=np.arange(400, dtype=np.int64) * 10, keys=[(i, i * 10, i * 10) for i in range(0, 400, 25)],
                   packets=400)
    assert [r.expect for r in plan(long, 4)] == [100, 100, 100, 100]
    short = _Survey(pts=pts[:30], keys=[(0, 0, 0), (15, 150, 150)], packets=30)
    assert plan(short, 2) == []  # ranges under MIN_RANGE_PACKETS cost more than they save
    assert plan(_Survey(pts=pts, keys=[(0, 0, 0)], packets=100), 2) == []
