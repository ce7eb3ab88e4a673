"""decord backend: the same frames and numbering as PyAV for H.264, PyAV for VP9 and damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from dataload.reader import VideoReader
from tests.dataload.test_reader_helpers import cfr_times, frame_index, vfr_times, write

pytest.importorskip("decord")


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("decord")
    return {"h264": write(d / "vfr.mp4", vfr_times(24, seed=5)),
            "vp9": write(d / "cfr.webm", cfr_times(12, 25), codec="libvpx-vp9")}


def test_same_frames_as_pyav_h264(vids):
    with VideoReader(vids["h264"], backend="pyav") as p, VideoReader(vids["h264"], backend="decord") as d:
        assert d.backend == "decord"
        for kw in ({"indices": [7, 0, 23, 7]}, {"fps": 9.0}, {"fps": 5.0, "start_s": 0.3, "end_s": 1.2},
                   {"num_frames": 6}, {}):
            a, b = p.read(**kw).numpy(), d.read(**kw).numpy()
            assert a.shape == b.shape, kw
            assert [frame_index(x) for x in a] == [frame_index(x) for x in b], kw
            assert np.abs(a.astype(int) - b).max() <= 3, kw
        a = p.read(luma=True, size=(12, 16)).numpy().astype(int)
        b = d.read(luma=True, size=(12, 16)).numpy().astype(int)
        assert np.abs(a - b).mean() < 2.5
        assert [(i, t) for i, t, _ in d.iter_frames(start_s=0.2, end_s=0.6)] == \
               [(i, t) for i, t, _ in p.iter_frames(start_s=0.2, end_s=0.6)]


def test_vp9_falls_back_to_pyav(vids):
    with VideoReader(vids["vp9"], backend="decord") as r:
        x = r.read(indices=[3, 11])
        assert r.backend == "pyav"
        assert [frame_index(a) for a in x.numpy()] == [3, 11]


@pytest.mark.real_videos
def test_real_h264_matches_pyav(real_videos_dir):
    for name in ("bikes.mp4", "nasa_13013.mp4", "carphone_pristine.mp4"):
        path = real_videos_dir / name
        with VideoReader(path, backend="pyav") as p, VideoReader(path, backend="decord") as d:
            assert d.backend == "decord"
            idx = [0, 17, 63, 100, 5]
            a, b = p.read(indices=idx).numpy(), d.read(indices=idx).numpy()
            assert a.shape == b.shape, name
            assert np.abs(a.astype(int) - b).mean() < 1.0, name


@pytest.mark.real_videos
def test_real_fallbacks(real_videos_dir):
    with VideoReader(real_videos_dir / "no_duration.webm", backend="decord") as r:
        assert r.backend == "pyav" and len(r.read(fps=2)) == 10
    # decord stops at the corrupt packet; the read is redone by PyAV, tolerant as asked
    with VideoReader(real_videos_dir / "corrupted.mp4", backend="decord") as r:
        x = r.read(indices=list(range(40)), size=(18, 32))
        assert len(x) == 40 and r.decode_errors == 1


def test_auto_uses_decord_for_sparse_reads_only(vids):
    with VideoReader(vids["h264"]) as r:
        assert r.backend == "pyav"
        full = r.read(size=(12, 16))
        assert r.backend == "pyav" and len(full) == 24
        sparse = r.read(indices=[2, 20])
        assert r.backend == "decord" and [frame_index(a) for a in sparse.numpy()] == [2, 20]
        assert len(r.read(size=(12, 16))) == 24 and r.backend == "pyav"  # streaming stays with PyAV
    with VideoReader(vids["h264"], strict=True) as r:
        r.read(indices=[2])
        assert r.backend == "pyav"  # strict decoding needs FFmpeg's per-packet error reports


def test_dali_without_dali_is_one_clear_error(vids):
    from dataload.backends.dali import dali_available
    from dataload.errors import VideoError

    if dali_available():
        pytest.skip("DALI and a GPU are present")
    with pytest.raises(VideoError, match="needs nvidia-dali"):
        VideoReader(vids["h264"], backend="dali")
