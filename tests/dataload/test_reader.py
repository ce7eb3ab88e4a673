"""VideoReader (PyAV backend): timestamps, frame selection, sizes, rotation, luma, errors."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pytest
import torch

from dataload.errors import CorruptVideoError, VideoError
from dataload.reader import VideoReader
from tests.dataload.test_reader_helpers import cfr_times, frame_index, vfr_times, write

VFR = vfr_times(24, seed=3)


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("reader")
    return {
        "cfr": write(d / "cfr.mp4", cfr_times(25, 25)),
        "vfr": write(d / "vfr.mkv", VFR),
        **{f"rot{r}": write(d / f"rot{r}.mp4", cfr_times(3, 25), rotation=r) for r in (90, 180, 270)},
        "sar": write(d / "sar.mp4", cfr_times(3, 25), sar=Fraction(4, 3)),
    }


def ids(t: torch.Tensor) -> list[int]:
    return [frame_index(a) for a in t.numpy()]


def nearest(times, grid):
    times = np.asarray(times)
    return [int(np.argmin(np.abs(times - g) + 1e-12 * np.arange(times.size))) for g in grid]


def test_timestamps_constant_and_variable(vids):
    with VideoReader(vids["cfr"], backend="pyav") as r:
        np.testing.assert_allclose(r.timestamps(), cfr_times(25, 25), atol=1e-9)
    with VideoReader(vids["vfr"], backend="pyav") as r:
        np.testing.assert_allclose(r.timestamps(), VFR, atol=1e-9)
        assert r.info.variable_frame_rate


def test_read_all_and_ranges(vids):
    with VideoReader(vids["vfr"], backend="pyav") as r:
        x = r.read()
        assert x.dtype == torch.uint8 and tuple(x.shape) == (24, 48, 64, 3)
        assert ids(x) == list(range(24))
        t = np.asarray(VFR)
        want = [i for i in range(24) if 0.3 <= t[i] < 0.9]
        assert ids(r.read(start_s=0.3, end_s=0.9)) == want
        got = [(i, round(tt, 3), frame_index(a)) for i, tt, a in r.iter_frames(start_s=0.3, end_s=0.9)]
        assert got == [(i, VFR[i], i) for i in want]


def test_fps_picks_nearest_timestamp(vids):
    t = VFR
    with VideoReader(vids["vfr"], backend="pyav") as r:
        end = r.info.duration_s
        for fps, start, stop in [(10, None, None), (7, 0.2, 1.0), (40, 0.0, 0.5)]:
            s = start or 0.0
            e = stop if stop is not None else end
            grid = np.arange(s, e - 1e-9, 1 / fps)
            cand = [i for i in range(len(t)) if s <= t[i] < e]
            want = [cand[j] for j in nearest([t[i] for i in cand], grid)]
            assert ids(r.read(fps=fps, start_s=start, end_s=stop)) == want, (fps, start, stop)
        # num_frames caps an fps read; alone it spreads evenly over the range
        assert len(r.read(fps=10, num_frames=3)) == 3
        spread = r.read(num_frames=4, start_s=0.0, end_s=1.0)
        assert ids(spread) == [nearest(t, [g])[0] for g in (0.0, 0.25, 0.5, 0.75)]


def test_indices_any_order_and_out_of_range(vids):
    with VideoReader(vids["cfr"], backend="pyav") as r:
        assert ids(r.read(indices=[5, 0, 5, 24])) == [5, 0, 5, 24]
        with pytest.raises(VideoError, match="out of range"):
            r.read(indices=[25])
        with pytest.raises(ValueError):
            r.read(indices=[1], fps=3)


@pytest.mark.parametrize("rot", [90, 180, 270])
def test_rotation_matches_ffmpeg_autorotate(vids, rot):
    import imageio_ffmpeg

    path = vids[f"rot{rot}"]
    with VideoReader(path, backend="pyav") as r:
        x = r.read().numpy()
        assert r.info.rotation == rot
    assert x.shape == (3, 48, 64, 3)
    assert x[0, :4, :4].min() > 200 and x[0, -4:, -4:].max() < 60  # marker top-left as displayed
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(x.shape)
    assert np.abs(ref.astype(int) - x).max() <= 2


def test_pixel_aspect_and_resize(vids):
    with VideoReader(vids["sar"], backend="pyav") as r:
        assert tuple(r.read().shape) == (3, 48, 86, 3)  # 64 x 4/3 = 85.3 -> 86
        assert tuple(r.read(size=(24, -1)).shape) == (3, 24, 43, 3)
        assert tuple(r.read(size=(20, 30)).shape) == (3, 20, 30, 3)
    with VideoReader(vids["rot90"], backend="pyav") as r:
        small = r.read(size=(12, 16)).numpy()
        assert small.shape == (3, 12, 16, 3) and small[0, 0, 0].min() > 200


def test_luma_matches_rgb_to_y(vids):
    with VideoReader(vids["vfr"], backend="pyav") as r:
        rgb = r.read(size=(24, 32)).numpy().astype(np.float64)
        y = r.read(size=(24, 32), luma=True).numpy().astype(np.float64)
    assert y.shape == rgb.shape[:3]
    ref = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(ref - y).mean() < 2.0 and np.abs(ref - y).max() < 12


def test_empty_selection_keeps_shape(vids):
    with VideoReader(vids["cfr"], backend="pyav") as r:
        assert tuple(r.read(start_s=50, end_s=60).shape) == (0, 48, 64, 3)
        assert tuple(r.read(start_s=50, end_s=60, luma=True, size=(10, 12)).shape) == (0, 10, 12)


def test_bad_input(tmp_path, vids):
    with pytest.raises(FileNotFoundError):
        VideoReader(tmp_path / "missing.mp4")
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        VideoReader(tmp_path / "zero.mp4")
    (tmp_path / "text.mp4").write_text("hello, not a video\n" * 10)
    with pytest.raises(VideoError, match="not a readable video"):
        VideoReader(tmp_path / "text.mp4")
    with pytest.raises(ValueError, match="backend"):
        VideoReader(vids["cfr"], backend="nope")
    with VideoReader(vids["cfr"]) as r, pytest.raises(ValueError):
        r.read(start_s=2, end_s=1)


@pytest.mark.real_videos
def test_every_real_file(real_videos_dir, ground_truth):
    expect = {"bikes.mp4": (250, 272, 640), "carphone_pristine.mp4": (120, 144, 192),
              "nasa_13013.mp4": (390, 270, 480), "flipping_a_pancake.mkv": (310, 240, 426),
              "test.avi": (164, 240, 320), "fire2.mp4": (25, 720, 1280), "no_duration.webm": (74, 720, 1280),
              "corrupted.mp4": (49, 720, 1280)}
    for name, (n, h, w) in expect.items():
        with VideoReader(real_videos_dir / name, backend="pyav") as r:
            count = 0
            for i, _t, y in r.iter_frames(luma=True, size=(-1, 64)):
                assert i == count and y.shape == (max(1, round(64 * h / w)), 64) and y.dtype == np.uint8
                count += 1
            assert count == n, name
            ts = r.timestamps()
            assert ts.size == n and ts[0] == 0.0 and np.all(np.diff(ts) > 0), name
        assert (r.info.height, r.info.width) == (h, w)
    with VideoReader(real_videos_dir / "flipping_a_pancake.mkv") as r:
        np.testing.assert_allclose(r.timestamps()[:5], ground_truth["flipping_a_pancake.mkv"]["first_timestamps_s"],
                                   atol=1e-9)
        first = r.read(indices=[0, 309])
        assert tuple(first.shape) == (2, 240, 426, 3)
    with VideoReader(real_videos_dir / "test.avi") as r:
        # AVI with packed B-frames: per-packet pts come out of order; times are repaired to display order
        np.testing.assert_allclose(r.timestamps()[:4], [0.0, 0.04, 0.08, 0.12], atol=1e-9)


@pytest.mark.real_videos
def test_corrupted_strict_and_tolerant(real_videos_dir):
    path = real_videos_dir / "corrupted.mp4"
    with VideoReader(path, backend="pyav") as r:
        x = r.read(size=(18, 32))
        assert len(x) == 49 and r.decode_errors >= 1
    with VideoReader(path, backend="pyav", strict=True) as r:
        with pytest.raises(CorruptVideoError, match="corrupt video data"):
            r.read(indices=list(range(40)), size=(18, 32))
    with VideoReader(path, strict=True) as r:
        assert r.read(indices=list(range(20)), size=(18, 32)).shape[0] == 20  # damage comes later


@pytest.mark.real_videos
def test_truncated_copy(real_videos_dir, tmp_path):
    data = (real_videos_dir / "fire2.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoError, match="truncated"):
        VideoReader(tmp_path / "cut.mp4")


@pytest.mark.parametrize("width", [64, 70])  # direct swscale path; PyAV path (not whole SIMD blocks)
def test_out_buffer_reused_and_rows_never_overrun(tmp_path, width):
    import av

    path = write(tmp_path / "odd.mp4", cfr_times(6, 25), size=(30, width))
    with av.open(str(path)) as c:
        ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with VideoReader(path, backend="pyav") as r:
        out = torch.full((8, 30, width, 3), 7, dtype=torch.uint8)
        got = r.read(out=out)
        assert np.array_equal(r.read().numpy(), ref)
    assert got.data_ptr() == out.data_ptr() and tuple(got.shape) == (6, 30, width, 3)
    assert np.array_equal(got.numpy(), ref) and [frame_index(a) for a in ref] == list(range(6))
    assert (out[6:] == 7).all()  # the spare slots are untouched
    with VideoReader(path, backend="pyav") as r, pytest.raises(ValueError, match="out"):
        r.read(out=torch.zeros((3, 30, width, 3), dtype=torch.uint8))


@pytest.mark.real_videos
def test_native_rgb_is_bit_identical_to_pyav(real_videos_dir):
    import av

    for name in ("bikes.mp4", "flipping_a_pancake.mkv", "nasa_13013.mp4", "test.avi"):  # nasa: BT.709
        path = real_videos_dir / name
        with VideoReader(path, backend="pyav") as r:
            ours = r.read().numpy()
            stream_index = r.info.stream_index
        with av.open(str(path)) as c:
            ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams[stream_index])])
        assert ours.shape == ref.shape and np.array_equal(ours, ref), name


@pytest.mark.real_videos
def test_seeking_once_timestamps_are_known(real_videos_dir):
    """After a full pass, reads from later times seek; the frames and numbers equal a pass from 0."""
    for name in ("bikes.mp4", "test.avi", "no_duration.webm", "corrupted.mp4"):
        path = real_videos_dir / name
        with VideoReader(path, backend="pyav") as fresh, VideoReader(path, backend="pyav") as known:
            ts = known.timestamps()
            start = float(ts[int(len(ts) * 0.7)])
            a = [(i, t) for i, t, _ in fresh.iter_frames(start_s=start, end_s=start + 0.5, size=(12, 16))]
            b = [(i, t) for i, t, _ in known.iter_frames(start_s=start, end_s=start + 0.5, size=(12, 16))]
            assert a == b and a, name
            x = fresh.read(indices=[len(ts) - 1, int(len(ts) * 0.7)], size=(12, 16))
            y = known.read(indices=[len(ts) - 1, int(len(ts) * 0.7)], size=(12, 16))
            assert torch.equal(x, y), name
            assert fresh._pyav.seeks == 0 and known._pyav.seeks == 2, name
            if name != "corrupted.mp4":
                assert known._pyav.seek_fallbacks == 0, name


@pytest.mark.real_videos
def test_fast_luma_decodes_every_frame_close_to_exact(real_videos_dir):
    """The analysis-grade decode (deblocking skipped) yields the same frames and times, luma within about
    a level on average; codecs without a deblocking filter (MPEG-4 part 2) decode exactly."""
    for name, exact in (("bikes.mp4", False), ("flipping_a_pancake.mkv", False), ("nasa_13013.mp4", False),
                        ("test.avi", True)):
        path = real_videos_dir / name
        with VideoReader(path, backend="pyav") as r, VideoReader(path, backend="pyav", fast_luma=True) as f:
            a = r.read(luma=True, size=(-1, 64)).numpy().astype(int)
            b = f.read(luma=True, size=(-1, 64)).numpy().astype(int)
            assert np.array_equal(r.timestamps(), f.timestamps()), name
            rgb_a, rgb_b = r.read(size=(-1, 64)), f.read(size=(-1, 64))
        assert a.shape == b.shape, name
        d = np.abs(a - b)
        if exact:
            assert d.max() == 0, name
        else:
            assert 0 < d.mean() < 2.0 and np.percentile(d, 99) <= 12, (name, d.mean(), np.percentile(d, 99))
        assert torch.equal(rgb_a, rgb_b), name  # RGB reads always decode exactly


@pytest.mark.real_videos
def test_repeated_late_reads_learn_timestamps_then_seek(real_videos_dir):
    """Clips of one video read in turn (as transcoding does): once a video's worth of frames was
    decoded only to reach starts, the reader learns the timestamps and seeks; results do not change."""
    path = real_videos_dir / "nasa_13013.mp4"
    with VideoReader(path, backend="pyav") as ref:
        want = {s: [(i, t) for i, t, _ in ref.iter_frames(start_s=s, end_s=s + 0.5, size=(9, 16))]
                for s in (6.0, 9.0, 12.0)}
    with VideoReader(path, backend="pyav") as r:
        for s in (6.0, 9.0, 12.0):
            assert [(i, t) for i, t, _ in r.iter_frames(start_s=s, end_s=s + 0.5, size=(9, 16))] == want[s]
        assert r._pyav.scan is not None and r._pyav.seeks >= 1 and r._pyav.seek_fallbacks == 0
