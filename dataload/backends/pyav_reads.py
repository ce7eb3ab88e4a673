"""Selections on one PyAV decoding pass (mixed into PyAVSource): a time range, everything into one array,
a regular time grid, or chosen frame numbers. Nothing is held but the previous picture, and only chosen
pictures are converted."""

from __future__ import annotations

import os
from dataclasses import dataclass

import av
import numpy as np

from dataload.backends.frame_convert import ConvertThread, FrameConverter, FrameSink
from dataload.backends.keyframe_ranges import read_luma_ranges
from dataload.backends.selection import GridSelector
from dataload.errors import VideoError


@dataclass
class Decoded:
    """One picture of a pass: its number (as decoded), its time (seconds from the first frame)."""

    index: int
    time_s: float
    frame: av.VideoFrame


class PyAVReadMixin:
    """Selections on one streaming pass (mixed into PyAVSource): nothing is held but the
    previous picture, and only chosen pictures are converted."""

    def converter(self, size, luma: bool) -> FrameConverter:
        w, h = self.coded_size
        return FrameConverter(w, h, self.sar, self.rotation or 0, size, luma)

    def _frames_in(self, start: float | None, end: float | None, luma: bool):
        """Decoded frames with start <= time < end; frames decoded before start count as wasted."""
        for d in self._frames_from(start, luma):
            if end is not None and d.time_s >= end - 1e-9:
                return
            if start is not None and d.time_s < start - 1e-9:
                self.wasted += 1
                continue
            yield d

    def decoded(self, start: float | None, end: float | None):
        """Every picture with start <= time < end, exactly decoded and not converted: for a caller that
        makes several views of each frame with `converter`, so one pass serves them all."""
        return self._frames_in(start, end, False)

    def iter_range(self, start: float | None, end: float | None, size, luma: bool):
        conv = None
        for d in self._frames_in(start, end, luma):
            if conv is None:
                conv = self.converter(size, luma)
            yield d.index, d.time_s, conv(d.frame)

    def read_all(self, start: float | None, end: float | None, size, luma: bool, out=None):
        """Every frame in [start, end) into one (T, H, W[, 3]) uint8 array, written in place: into
        `out` (a reusable buffer) when given, else into storage sized from the header's frame count.
        A whole-video luma read decodes key-frame ranges side by side where it can (keyframe_ranges)."""
        if luma and start is None and end is None and self.threads != 1 and (os.cpu_count() or 1) > 1:
            arr = read_luma_ranges(self, size, out)
            if arr is not None:
                return arr
        conv = None
        sink = None
        pipe = None
        try:
            for d in self._frames_in(start, end, luma):
                if conv is None:
                    conv = self.converter(size, luma)
                    sink = FrameSink(conv.shape, self._count_hint(start, end), out)
                    cores = os.cpu_count() or 1
                    # luma conversions cost less than a hand-off between threads (measured up to 1080p)
                    if self.threads != 1 and cores > 1 and not luma:
                        pipe = ConvertThread(lambda: self.converter(size, luma), workers=min(2, cores))
                if pipe is not None:
                    pipe.put(d.frame, sink.slot())
                else:
                    conv(d.frame, sink.slot())
        finally:
            if pipe is not None:
                pipe.close()  # waits for the last frames; re-raises a conversion error
        if sink is None:
            return None
        return sink.result()

    def _frames_from(self, start: float | None, luma: bool):
        """frames(start) for a read, first learning the timestamps (one pass without conversion)
        once reads have decoded and thrown away a whole video's worth of frames before their
        start: from then on they seek. At most about twice the decoding a read-everything
        approach would do, and far less for many reads from late starts (clips of a long video)."""
        if start and self.scan is None and self._scan_pays_off():
            self.run_scan()
        return self.frames(start, fast=luma and self.fast_luma)

    def _scan_pays_off(self) -> bool:
        return self.wasted >= max(self.header_frames or 0, 250)

    def _count_hint(self, start: float | None, end: float | None) -> int:
        """About how many frames [start, end) holds, to size storage (it grows if short)."""
        total = int(self.scan.times.size) if self.scan is not None else (self.header_frames or 0)
        fps = self.nominal_fps or 30.0
        if end is not None:
            est = int((end - (start or 0.0)) * fps * 1.05) + 2
            return max(1, min(total, est) if total else est)
        if start:
            return max(1, total - int(start * fps * 0.95)) if total else 64
        return total or 64

    def read_grid(self, selector: GridSelector, start: float | None, size, luma: bool) -> list[np.ndarray]:
        conv = None
        out: list[np.ndarray] = []
        prev: Decoded | None = None
        cache: tuple[int, np.ndarray] | None = None  # the last converted frame, for repeats
        last_end = 0.0
        stopped = False

        def take(i: int, cur: Decoded) -> None:
            nonlocal cache
            if cache is None or cache[0] != i:
                src = cur if cur.index == i else prev
                cache = (i, conv(src.frame))
            out.append(cache[1])

        for d in self._frames_from(start, luma):
            if start is not None and d.time_s < start - 1e-9:
                self.wasted += 1
                continue
            if selector.end is not None and d.time_s >= selector.end - 1e-9:
                stopped = True
                break
            if conv is None:
                conv = self.converter(size, luma)
            for i in selector.feed(d.index, d.time_s):
                take(i, d)
            prev = d
            dur = float(d.frame.duration * self.time_base) if d.frame.duration else None
            last_end = d.time_s + (dur or self._median_step())
            if selector.done:
                stopped = True
                break
        if prev is not None:
            stream_end = selector.end if stopped and selector.end is not None else last_end
            for i in selector.finish(stream_end):
                take(i, prev)
        return out

    def _median_step(self) -> float:
        return 1.0 / self.nominal_fps if self.nominal_fps else 0.0

    def read_indices(self, indices: np.ndarray, size, luma: bool) -> list[np.ndarray]:
        wanted = set(int(i) for i in indices)
        top = max(wanted) if wanted else -1
        got: dict[int, np.ndarray] = {}
        conv = None
        n = 0
        lowest = min(wanted) if wanted else 0
        start = None
        if lowest > 0 and self.scan is None and self._scan_pays_off():
            self.run_scan()
        if self.scan is not None and 0 < lowest < self.scan.times.size:
            start = float(self.scan.times[lowest])  # lets the pass seek when timestamps are known
        for d in self.frames(start, fast=luma and self.fast_luma):
            n = d.index + 1
            if d.index < lowest:
                self.wasted += 1
            if d.index in wanted:
                if conv is None:
                    conv = self.converter(size, luma)
                got[d.index] = conv(d.frame)
            if d.index >= top:
                break
        missing = sorted(wanted - got.keys())
        if missing:
            raise VideoError(f"{self.path}: frame index {missing[0]} out of range "
                             f"(the video has {n} decoded frames)")
        return [got[int(i)] for i in indices]
