"""Whole-video luma reads decoded as independent key-frame ranges, one per core.

FFmpeg's frame threading keeps only about 1.45 of 2 cores busy on the shared videos (each picture waits
for the rows it predicts from). An RGB read fills the rest with its colour conversion; a luma read has
little conversion to do, so it splits the video at key frames instead and decodes the ranges side by
side, each with its own demuxer, one-thread decoder and converter (PyAV and OpenCV release the GIL).

A demux-only pass (no decoding, a few ms) lists every packet's timestamps and the key frames first.
Range i keeps the pictures whose timestamps fall in [key_i, key_i+1): open-GOP leading pictures of
key_i+1 are decoded by range i, which has their references, and dropped by range i+1. Anything
unusual (a packet without timestamps, a damaged packet, a decode error, a picture the decoder flags,
a seek that lands elsewhere, a frame set that differs from the packets', a change of size or
rotation) gives None, and the caller decodes the usual way: results always equal a sequential pass.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import av
import numpy as np

from dataload.backends.container import open_container, rotation_of
from dataload.backends.frame_convert import FrameConverter, FrameSink

MIN_RANGE_PACKETS = 24  # shorter ranges cost more in opening and seeking than they save


class _Unusual(Exception):
    """Something a sequential pass handles better (it counts errors and keeps its conventions)."""


@dataclass
class _Survey:
    pts: np.ndarray  # every packet's pts, sorted: the frames' timestamps
    keys: list[tuple[int, int, int]]  # (packet number in decode order, pts, seek timestamp) of key frames
    packets: int


@dataclass
class _Range:
    lo: int | None  # first pts kept: its key frame's (None: from the start)
    hi: int | None  # first pts not kept (None: to the end)
    seek_ts: int | None  # the key frame's dts (some demuxers seek by it)
    expect: int  # pictures whose pts fall in [lo, hi)
    frames: list = field(default_factory=list)  # (pts, array)
    first: tuple | None = None  # (width, height, rotation) of its first picture
    last_duration: int | None = None


def survey(path: str, stream_index: int) -> _Survey | None:
    """Packet timestamps and key frames from demuxing alone; None when some packet has no pts."""
    pts, keys = [], []
    with open_container(path) as container:
        stream = container.streams[stream_index]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            if packet.pts is None or packet.is_corrupt:
                return None
            if packet.is_keyframe:
                keys.append((len(pts), packet.pts, packet.dts if packet.dts is not None else packet.pts))
            pts.append(packet.pts)
    arr = np.sort(np.asarray(pts, dtype=np.int64))
    if arr.size == 0 or np.any(np.diff(arr) == 0):
        return None
    return _Survey(arr, keys, len(pts))


def plan(s: _Survey, workers: int) -> list[_Range]:
    """Up to `workers` ranges starting at key frames, split near equal packet counts."""
    starts = [0]
    for w in range(1, workers):
        want = s.packets * w / workers
        best = min((k for k in s.keys if k[0] > 0), key=lambda k: abs(k[0] - want), default=None)
        if best is not None and best[0] not in starts:
            starts.append(best[0])
    by_packet = {k[0]: k for k in s.keys}
    starts = sorted(starts)
    bounds = starts + [s.packets]
    if min(b - a for a, b in zip(bounds, bounds[1:])) < MIN_RANGE_PACKETS:
        return []
    ranges = []
    for i, p in enumerate(starts):
        key = by_packet[p] if i else None
        nxt = by_packet[starts[i + 1]] if i + 1 < len(starts) else None
        lo = key[1] if key else None
        hi = nxt[1] if nxt else None
        sel = s.pts
        if lo is not None:
            sel = sel[sel >= lo]
        if hi is not None:
            sel = sel[sel < hi]
        ranges.append(_Range(lo, hi, key[2] if key else None, int(sel.size)))
    return ranges if len(ranges) > 1 else []  # consecutive [lo, hi) ranges: every pts falls in one


def _decode_range(path: str, stream_index: int, r: _Range, fast: bool, sar, size, stop: threading.Event) -> _Range:
    """Decode one range; on anything unusual set `stop` (the other ranges give up too) and raise."""
    try:
        return _decode_range_or_raise(path, stream_index, r, fast, sar, size, stop)
    except BaseException:
        stop.set()
        raise


def _decode_range_or_raise(path, stream_index, r: _Range, fast: bool, sar, size, stop: threading.Event) -> _Range:
    container = open_container(path)
    try:
        stream = container.streams[stream_index]
        stream.codec_context.thread_count = 1  # the ranges are the parallelism
        if fast:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        packets = container.demux(stream) if r.lo is None else _seek(container, stream, r)
        convert = None
        for packet in packets:
            if packet.is_corrupt or stop.is_set():
                raise _Unusual
            try:
                frames = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError:
                raise _Unusual from None
            for f in frames:
                if f.pts is None:
                    raise _Unusual
                if (r.lo is not None and f.pts < r.lo) or (r.hi is not None and f.pts >= r.hi):
                    continue  # another range's picture (leading pictures decode there with their references)
                if f.is_corrupt:
                    raise _Unusual
                shape = (f.width, f.height, rotation_of(f))
                if convert is None:
                    r.first = shape
                    convert = FrameConverter(f.width, f.height, sar, shape[2], size, True)
                elif shape != r.first:
                    raise _Unusual
                r.frames.append((f.pts, convert(f)))
                r.last_duration = f.duration or None
            if len(r.frames) >= r.expect:
                break
        r.frames.sort(key=lambda x: x[0])
        return r
    finally:
        container.close()


def _seek(container, stream, r: _Range):
    """Packets from the range's key frame on. Demuxers seek by pts (MP4) or by their index's
    timestamps (dts elsewhere): try both, and check where the seek landed."""
    for target in dict.fromkeys((r.lo, r.seek_ts)):
        container.seek(target, stream=stream, backward=True, any_frame=False)
        packets = container.demux(stream)
        for packet in packets:
            if packet.size:
                break
        else:
            continue
        if packet.pts == r.lo and packet.is_keyframe:
            yield packet
            yield from packets
            return
    raise _Unusual  # no seek landed on the key frame


def read_luma_ranges(source, size, out=None) -> np.ndarray | None:
    """Every frame of `source` (a PyAVSource) as luma at `size`, decoded in key-frame ranges on
    several threads, recording the pass's scan as a sequential pass would; None when this video
    should be read the usual way."""
    workers = min(os.cpu_count() or 1, 8)
    if source.indexed_single_keyframe():
        return None  # one group of pictures: nothing to split (and no demux pass to pay for)
    s = survey(source.path, source.stream_index)
    ranges = plan(s, workers) if s is not None else []
    if not ranges:
        return None
    fast = bool(source.fast_luma)
    stop = threading.Event()
    args = (source.path, source.stream_index)
    try:
        with ThreadPoolExecutor(len(ranges) - 1) as pool:
            rest = [pool.submit(_decode_range, *args, r, fast, source.sar, size, stop) for r in ranges[1:]]
            try:
                done = [_decode_range(*args, ranges[0], fast, source.sar, size, stop)]
            finally:
                done_rest = [f.result() for f in rest]  # waits for them whatever happened here
            done += done_rest
    except _Unusual:
        return None
    pts = [p for r in done for p, _ in r.frames]
    if len(pts) != s.pts.size or not np.array_equal(np.asarray(pts, dtype=np.int64), s.pts):
        return None
    if any(r.first != done[0].first for r in done):
        return None
    sink = FrameSink(done[0].frames[0][1].shape, len(pts), out)
    for r in done:
        for _, a in r.frames:
            sink.slot()[...] = a
    w, h, rot = done[0].first
    source.record_range_pass(pts, done[-1].last_duration, (w, h), rot)
    return sink.result()
