"""Transcode: frame-accurate spans (pixels and timestamps of exactly [start_frame, end_frame)), variable
frame rate kept, H.264 yuv420p with even dimensions, the same bytes every time."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from curate.stages.split.plan import span_times
from curate.stages.transcode.config import TranscodeConfig
from curate.stages.transcode.encode import output_size
from curate.stages.transcode.stage import TranscodeStage
from curate.task import Clip, SourceTask
from dataload.reader import VideoReader
from dataload.synthetic import Shot, make_video


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("transcode") / "vfr.mp4"
    truth = make_video(path, [Shot("pan", 60, seed=4, speed=3.0)], [], width=162, height=98, vfr=True)
    return str(path), truth


def _transcode(path, truth, start, end, tmp_path, cfg=None):
    times = list(truth.frame_times)
    start_s, end_s = span_times(times, truth.fps, start, end)
    task = SourceTask(index=0, source=path, key="k", local_path=path, work_dir=str(tmp_path),
                      width=truth.width, height=truth.height, fps=truth.fps, frame_times=times)
    task.clips = [Clip("clip", path, start_s, end_s, start, end, end - start, truth.fps, 0, 0)]
    TranscodeStage(cfg or TranscodeConfig()).process([task])
    assert task.status == "pending", task.reason
    return task.clips[0], (tmp_path / "clip.mp4").read_bytes()


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-9))


def test_clip_is_exactly_its_span(vfr_video, tmp_path):
    path, truth = vfr_video
    clip, data = _transcode(path, truth, 17, 41, tmp_path)
    assert (clip.width, clip.height) == (162, 98) and clip.media == "clip.mp4"
    with av.open(io.BytesIO(data)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "h264"
        frames = list(c.decode(st))
    assert len(frames) == 24 and frames[0].format.name == "yuv420p"
    got_t = np.array([float(f.pts * f.time_base) for f in frames])
    want_t = np.array(truth.frame_times[17:41]) - truth.frame_times[17]
    assert np.abs(got_t - want_t).max() < 2e-3  # variable frame timing survives
    with VideoReader(path) as r:
        src = r.read(indices=list(range(16, 42))).numpy()
    out = np.stack([f.to_ndarray(format="rgb24") for f in frames])
    for i in range(24):  # each output frame matches its own source frame, not a neighbour
        scores = [_psnr(out[i], src[j]) for j in range(i, i + 3)]
        assert scores[1] > 30 and scores[1] > max(scores[0], scores[2]) + 3, (i, scores)


def test_bytes_are_deterministic_and_dimensions_even(vfr_video, tmp_path):
    path, truth = vfr_video
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, one = _transcode(path, truth, 0, 30, tmp_path / "a")
    _, two = _transcode(path, truth, 0, 30, tmp_path / "b")
    assert one == two
    assert output_size(193, 145, None) == (144, 192)
    assert output_size(1280, 720, 360) == (360, 640)
    assert output_size(1279, 721, 361) == (360, 640)
    cfg = TranscodeConfig(max_height=48)
    (tmp_path / "c").mkdir()
    clip, data = _transcode(path, truth, 0, 30, tmp_path / "c", cfg)
    assert (clip.height, clip.width) == (48, 78)
    with av.open(io.BytesIO(data)) as c:
        f = next(c.decode(video=0))
        assert (f.width, f.height) == (78, 48)
