"""Our TransNetV2 splitter against the package's own inference on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.stages.split.config import SplitConfig
from curate.stages.split.frames import decode_small
from curate.stages.split.transnet import TransNetSplitter, _model_class, cuts_from_predictions
from dataload.synthetic import Shot, Transition, make_video


def test_cuts_from_predictions():
    p = np.zeros(40)
    p[9] = 0.9  # one frame: a hard cut at 10
    p[20:26] = 0.8  # a gradual transition
    p[38:] = 0.7  # runs into the end: no new shot
    assert cuts_from_predictions(p) == ([10, 26], [(20, 26)])


@pytest.mark.slow
def test_same_predictions_as_package(tmp_path):
    # 130 frames: three overlapping windows, so on two threads one run of one window each side by
    # side and a third that continues the second run, reusing its overlap
    make_video(tmp_path / "t.mp4", [Shot("texture", 50, 1), Shot("pan", 80, 2, speed=3)], [Transition("cut")],
               width=96, height=54, fps=25)
    frames = decode_small(tmp_path / "t.mp4", size=(27, 48), luma=False, skip_deblock=False).frames
    assert len(frames) == 130
    # the package's own windowing and inference, on its own network and the same frames
    was = torch.are_deterministic_algorithms_enabled()
    package = _model_class()(device="cpu")
    single, _ = package.predict_frames(torch.from_numpy(frames), quiet=True)
    torch.use_deterministic_algorithms(was)
    ours = TransNetSplitter(SplitConfig(device="cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        np.testing.assert_allclose(ours.predict(frames), single.numpy(), atol=2e-5)
        assert torch.get_num_threads() == 2  # lowered for the side-by-side runs, then restored
        torch.set_num_threads(1)  # one run streams all three windows
        np.testing.assert_allclose(ours.predict(frames), single.numpy(), atol=2e-5)
    finally:
        torch.set_num_threads(threads)
    assert ours.detect(frames)[0] == [50]
    # windows are the package's: padded with copies of the first and last frames, 100 long, step 50
    w = ours.windows(torch.from_numpy(frames))
    assert w.shape == (3, 100, 27, 48, 3)
    assert torch.equal(w[0, :25], torch.from_numpy(frames[:1]).expand(25, -1, -1, -1))
    assert torch.equal(w[0, 25:], torch.from_numpy(frames[:75]))
    assert torch.equal(w[1, :50], w[0, 50:])
    assert torch.equal(w[2, 55:], torch.from_numpy(frames[-1:]).expand(45, -1, -1, -1))


def test_frames_equal_ffmpeg_cli(tmp_path):
    """The package feeds its model `ffmpeg -s 48x27 -pix_fmt rgb24`; our decoder gives the same pixels."""
    import subprocess

    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - no ffmpeg binary on this platform
        pytest.skip("no ffmpeg program")
    make_video(tmp_path / "v.mp4", [Shot("objects", 15, 1), Shot("zoom", 15, 2)], [Transition("dissolve", 6)],
               width=160, height=90, fps=25)
    out = subprocess.run([exe, "-v", "error", "-i", str(tmp_path / "v.mp4"), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", "48x27", "pipe:"], capture_output=True, check=True).stdout
    want = np.frombuffer(out, np.uint8).reshape(-1, 27, 48, 3)
    got = decode_small(tmp_path / "v.mp4", size=(27, 48), luma=False, skip_deblock=False).frames
    assert got.shape == want.shape == (36, 27, 48, 3)
    assert np.array_equal(got, want)
