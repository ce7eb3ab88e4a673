"""Small frames for shot detection, decoded once per video.

The content detector reads ~64 px wide luma: the reader's analysis path (`VideoReader.read_array(luma=True,
size=...)` with `fast_luma`; in a curation run the probe stage's one pass, `read_analysis`), so frames are numbered and timed exactly as the probe and every later
stage see them, with one analysis-only shortcut: the H.264/HEVC deblocking filter is skipped. That saves
10-18% of the decoding (H.264) and finds the same cuts as exact decoding on the real videos and the split
benchmark's synthetic set (one dissolve there ends a frame earlier; tests/curate/test_split.py).
TransNetV2 reads 48x27 RGB from its own pass that follows the reader's conventions (same stream
choice, frames numbered as decoded, times from stream timestamps, corrupt packets skipped and
counted) but scales through libavfilter, as the model's own package does.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from curate.task import AnalysisFrames
from dataload.backends.container import choose_stream, open_container, rotation_of
from dataload.errors import VideoError
from dataload.reader import VideoReader


class _ScaledRGB:
    """RGB at an exact (h, w) through libavfilter's `scale` filter and then upright: the very pixels
    `ffmpeg -i VIDEO -s WxH -pix_fmt rgb24` gives (its default autorotation included), which is how
    TransNetV2 is fed by its own package and in training."""

    def __init__(self, stream, first: av.VideoFrame, size: tuple[int, int]):
        h, w = size
        self.k = -(rotation_of(first) // 90)
        sw, sh = (h, w) if self.k % 2 else (w, h)  # scale in the coded orientation
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(template=stream)
        scale = self.graph.add("scale", f"{sw}:{sh}")
        fmt = self.graph.add("format", "rgb24")
        sink = self.graph.add("buffersink")
        src.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        self.graph.configure()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        self.graph.push(frame)
        arr = self.graph.pull().to_ndarray()
        return np.ascontiguousarray(np.rot90(arr, self.k)) if self.k % 4 else arr


def read_analysis(reader: VideoReader, width: int) -> AnalysisFrames:
    """Every frame of an open reader as luma `width` pixels wide (the content splitter's input), decoded as
    the reader is set up (analysis-grade with `fast_luma`); the pass also records the frame times."""
    frames = reader.read_array(luma=True, size=(-1, width))
    times = reader.timestamps()  # learnt by that pass: no second decode
    return AnalysisFrames(frames, times, _average_fps(times, reader.info.nominal_fps), reader.decode_errors)


def decode_small(path: str | os.PathLike, *, size: tuple[int, int], luma: bool = True, threads: int = 0,
                 skip_deblock: bool = True) -> AnalysisFrames:
    """Every frame of `path` at `size` = (h, w) (one side -1 keeps the display aspect), luma or RGB."""
    path = os.fspath(path)
    if luma:
        with VideoReader(path, backend="pyav", threads=threads, fast_luma=skip_deblock) as reader:
            frames = reader.read_array(luma=True, size=size)
            times = reader.timestamps()  # learnt by that pass: no second decode
            return AnalysisFrames(frames, times, _average_fps(times, reader.info.nominal_fps), reader.decode_errors)
    container = open_container(path)
    with container:
        stream = choose_stream(container, path, None)
        stream.thread_type = "AUTO"
        cc = stream.codec_context
        cc.thread_count = threads
        if skip_deblock:
            cc.options = {"skip_loop_filter": "all"}
        tb = stream.time_base or Fraction(1, 1000)
        convert = None
        out, pts, errors = [], [], 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # damaged container: keep what decoded
                errors += 1
                break
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError:
                errors += 1
                continue
            for frame in decoded:
                if convert is None:
                    convert = _ScaledRGB(stream, frame, size)
                out.append(convert(frame))
                pts.append(frame.pts if frame.pts is not None else (pts[-1] + 1 if pts else 0))
    if not out:
        raise VideoError(f"{path}: no decodable video frames" + (f" ({errors} decode errors)" if errors else ""))
    # Pictures come out in display order but packed B-frames can carry unsorted pts: the k-th
    # picture gets the k-th smallest timestamp.
    times = np.sort(np.asarray(pts, dtype=np.float64)) * float(tb)
    times -= times[0]
    return AnalysisFrames(np.stack(out), times, _average_fps(times, float(stream.average_rate or 0.0)), errors)


def _average_fps(times: np.ndarray, nominal: float | None) -> float:
    """Frames over duration, the last frame lasting a typical interval (the nominal rate for one frame)."""
    n = len(times)
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    duration = float(times[-1]) + step
    return n / duration if duration > 0 else float(nominal or 0.0)
