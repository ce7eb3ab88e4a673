"""The one video writer: frame by frame or from an iterator, the same bytes; atomic (an aborted or failed
file leaves nothing behind); any container by suffix."""

from __future__ import annotations

import numpy as np
import pytest

from dataload.h264 import H264Writer, encode_h264


def _frames(n=6, h=34, w=50):
    rng = np.random.default_rng(0)
    return [(i / 25, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for i in range(n)]


def test_incremental_writer_gives_the_bytes_of_encode_h264(tmp_path):
    frames = _frames()
    times = encode_h264(frames, tmp_path / "a.mp4", fps=25, crf=20, preset="veryfast")
    with H264Writer(tmp_path / "b.mp4", fps=25, crf=20, preset="veryfast") as w:
        for t, arr in frames:
            w.write(t, arr)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes() and w.written == times


def test_abort_and_failure_leave_nothing(tmp_path):
    w = H264Writer(tmp_path / "x.mp4", fps=25)
    w.write(0.0, _frames(1)[0][1])
    w.abort()
    with pytest.raises(ValueError, match="differs"):
        with H264Writer(tmp_path / "y.mp4", fps=25) as w2:
            w2.write(0.0, _frames(1)[0][1])
            w2.write(0.04, _frames(1, h=40)[0][1])
    with pytest.raises(ValueError, match="at least one frame"):
        H264Writer(tmp_path / "z.mp4", fps=25).close()
    assert list(tmp_path.iterdir()) == []
