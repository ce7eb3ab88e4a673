"""probe(): facts of synthetic videos with known timing, of every real sample file, and bad input."""

from __future__ import annotations

import shutil
from fractions import Fraction

import pytest

from dataload.errors import CorruptVideoError, VideoError
from dataload.probe import probe
from tests.dataload.test_reader_helpers import cfr_times, vfr_times, write


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    return {
        "cfr": write(d / "cfr.mp4", cfr_times(20, 25)),
        "vfr": write(d / "vfr.mkv", vfr_times(20, seed=1)),
        "rot90": write(d / "rot90.mp4", cfr_times(4, 25), rotation=90),
        "sar": write(d / "sar.mp4", cfr_times(4, 25), sar=Fraction(128, 117)),
    }


def test_constant_rate(vids):
    info = probe(vids["cfr"])
    assert (info.num_frames, info.width, info.height, info.codec) == (20, 64, 48, "h264")
    assert info.fps == pytest.approx(25.0, rel=1e-6)
    assert info.duration_s == pytest.approx(0.8, abs=1e-6)
    assert not info.variable_frame_rate and info.decode_errors == 0 and info.rotation == 0


def test_variable_rate(vids):
    times = vfr_times(20, seed=1)
    info = probe(vids["vfr"])
    assert info.num_frames == 20 and info.variable_frame_rate
    # average over the span of the decoded frames (the last frame lasts as long as Matroska says)
    assert info.duration_s >= times[-1]
    assert info.fps == pytest.approx(20 / info.duration_s)


def test_rotation_swaps_display_size(vids):
    info = probe(vids["rot90"])
    assert info.rotation == 90
    assert (info.coded_width, info.coded_height) == (48, 64)
    assert (info.width, info.height) == (64, 48)


def test_pixel_aspect_rule(vids):
    info = probe(vids["sar"])
    assert info.sample_aspect_ratio == "128:117"
    assert (info.coded_width, info.width, info.height) == (64, 70, 48)  # 64 * 128 / 117 = 70.02


def test_to_dict_is_json_ready(vids):
    import json

    d = json.loads(json.dumps(probe(vids["cfr"]).to_dict()))
    assert d["streams"][0]["type"] == "video" and d["num_frames"] == 20


@pytest.mark.real_videos
def test_real_files_match_ground_truth(real_videos_dir, ground_truth):
    gt = ground_truth
    b = probe(real_videos_dir / "bikes.mp4")
    assert (b.codec, b.width, b.height, b.num_frames) == ("h264", 640, 272, 250)
    assert b.fps == pytest.approx(25.0) and not b.variable_frame_rate

    c = probe(real_videos_dir / "carphone_pristine.mp4")
    g = gt["carphone_pristine.mp4"]
    assert (c.coded_width, c.coded_height, c.sample_aspect_ratio) == (g["coded_width"], g["coded_height"],
                                                                       g["sample_aspect_ratio"])
    assert (c.width, c.height, c.num_frames) == (g["display_width"], g["display_height"], g["frames"])

    n = probe(real_videos_dir / "nasa_13013.mp4")
    g = gt["nasa_13013.mp4"]["best_video_stream"]
    assert len(n.streams) == gt["nasa_13013.mp4"]["streams"]
    assert (n.width, n.height, n.num_frames) == (g["width"], g["height"], g["frames"])
    assert n.fps == pytest.approx(g["fps"], abs=0.01) and n.duration_s == pytest.approx(g["duration_s"], abs=1e-3)
    other = probe(real_videos_dir / "nasa_13013.mp4", stream=0)
    g = gt["nasa_13013.mp4"]["other_video_stream"]
    assert (other.width, other.height, other.num_frames) == (g["width"], g["height"], g["frames"])
    assert other.fps == pytest.approx(g["fps"], abs=0.01)

    m = probe(real_videos_dir / "flipping_a_pancake.mkv")
    assert (m.container, m.num_frames) == ("matroska", gt["flipping_a_pancake.mkv"]["frames"])
    assert not m.variable_frame_rate  # 33/34 ms is millisecond rounding, not variable timing

    a = probe(real_videos_dir / "test.avi")
    g = gt["test.avi"]
    assert (a.container, a.codec, a.width, a.height) == (g["container"], g["codec"], g["width"], g["height"])
    assert a.num_frames == g["frames_decoded"]

    f = probe(real_videos_dir / "fire2.mp4")
    g = gt["fire2.mp4"]
    assert (f.rotation, f.num_frames, f.variable_frame_rate) == (g["rotation_deg"], g["frames"], True)
    assert (f.coded_width, f.coded_height, f.width, f.height) == (
        g["coded_width"], g["coded_height"], g["display_width"], g["display_height"])
    assert f.fps == pytest.approx(g["avg_fps"], abs=0.01)

    w = probe(real_videos_dir / "no_duration.webm")
    assert (w.codec, w.num_frames) == ("vp9", gt["no_duration.webm"]["frames"])
    assert w.duration_s > 4.5 and w.variable_frame_rate


@pytest.mark.real_videos
def test_corrupted_tolerant_and_strict(real_videos_dir, ground_truth):
    info = probe(real_videos_dir / "corrupted.mp4")
    assert info.num_frames == ground_truth["corrupted.mp4"]["decodable_frames"]
    assert info.decode_errors >= 1
    assert info.streams[0].num_frames == ground_truth["corrupted.mp4"]["header_frames"]
    with pytest.raises(CorruptVideoError, match="corrupt video data"):
        probe(real_videos_dir / "corrupted.mp4", strict=True)


@pytest.mark.real_videos
def test_truncated_copy_is_refused(real_videos_dir, tmp_path):
    data = (real_videos_dir / "fire2.mp4").read_bytes()  # index first, then the samples
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated"):
        probe(tmp_path / "cut.mp4")
    bikes = (real_videos_dir / "bikes.mp4").read_bytes()  # samples first, index at the end
    (tmp_path / "cut2.mp4").write_bytes(bikes[: len(bikes) // 2])
    with pytest.raises(VideoError, match="not a readable video"):
        probe(tmp_path / "cut2.mp4")


def test_bad_input(tmp_path, vids):
    with pytest.raises(FileNotFoundError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("this is text, not a video\n" * 20)
    with pytest.raises(VideoError, match="not a readable video"):
        probe(tmp_path / "notes.mp4")
    with pytest.raises(VideoError, match="directory"):
        probe(tmp_path)
    shutil.copy(vids["cfr"], tmp_path / "ok.mp4")
    with pytest.raises(VideoError, match="not a video stream"):
        probe(tmp_path / "ok.mp4", stream=5)
