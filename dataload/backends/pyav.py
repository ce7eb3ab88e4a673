"""PyAV backend: one opened video stream, decoded frame by frame in display order with timestamps,
tolerant or strict (`PyAVSource`). Opening and stream choice live in `container`, pixel conversion in
`frame_convert`, the selections a read makes on a pass in `pyav_reads`.

PyAV bundles FFmpeg, so this backend reads every codec; the others fall back to it.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

# choose_stream, open_container, rotation_of and resolve_size are this backend's public names too
from dataload.backends.container import (
    choose_stream,
    ffmpeg_message,
    open_container,
    rotation_of,
    stream_infos,
)
from dataload.backends.frame_convert import resolve_size
from dataload.backends.pyav_reads import Decoded, PyAVReadMixin
from dataload.errors import CorruptVideoError, VideoError

__all__ = ["Decoded", "PyAVSource", "Scan", "choose_stream", "open_container", "resolve_size", "rotation_of"]

# Decoded frames may carry out-of-order pts (AVI with packed B-frames stores them per packet, not per
# picture). The decoder emits pictures in display order, so the k-th frame gets the k-th smallest pts
# of a small look-ahead window.
_REORDER_DEPTH = 4


@dataclass
class Scan:
    """What one full decoding pass saw."""

    times: np.ndarray  # float64 seconds from the first frame, per decoded frame
    last_duration_s: float | None  # the last frame's own duration, when the container says
    decode_errors: int
    coded_width: int
    coded_height: int
    rotation: int
    sar: Fraction
    first_pts: int | None = None  # stream ticks of frame 0 (seeking maps times back to ticks)


@dataclass
class _PassState:
    """Bookkeeping of one decoding pass (errors, first pts, a scan when it ran to the end)."""

    errors: int = 0
    times: list = field(default_factory=list)
    last_duration: int | None = None
    complete: bool = False


class PyAVSource(PyAVReadMixin):
    """One opened video stream. `frames()` decodes it from the start in display order."""

    def __init__(self, path, *, stream: int | None = None, threads: int = 0, strict: bool = False):
        self.path = os.fspath(path)
        self.strict = strict
        self.threads = threads
        self._container = open_container(self.path)
        try:
            self._stream = choose_stream(self._container, self.path, stream)
            self.stream_index = self._stream.index
            cc = self._stream.codec_context
            if cc is None:
                raise VideoError(f"{self.path}: no decoder for stream {self.stream_index}")
            self.codec = cc.name
            self.container_name = self._container.format.name.split(",")[0]
            self.time_base = self._stream.time_base or Fraction(1, 1000)
            rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
            self.nominal_fps = float(rate) if rate else None
            self.header_frames = self._stream.frames or None
            self.header_width, self.header_height = cc.width or 0, cc.height or 0
            self.streams = stream_infos(self._container)
            self._check_complete()
            sar = self._stream.sample_aspect_ratio or cc.sample_aspect_ratio
            self.sar = Fraction(sar) if sar and sar > 0 else Fraction(1, 1)
            self.rotation: int | None = None  # known after the first frame
            self.coded_size: tuple[int, int] | None = None  # (w, h), known after the first frame
            self.scan: Scan | None = None
            self._pass: _PassState | None = None
            self.fast_luma = False  # luma passes decode analysis-grade (no deblocking, see _restart)
            self.seeks = 0  # passes that started with a seek
            self.wasted = 0  # frames decoded only to reach a read's start
            self.seek_fallbacks = 0  # ... of which went back to decoding from the start
            self._used = False
        except BaseException:
            self._container.close()
            raise

    def _check_complete(self) -> None:
        """A file shorter than its own index (MP4/MOV sample tables) was cut off: refuse it clearly."""
        try:
            entries = self._stream.index_entries
            tail = [entries[i] for i in range(max(0, len(entries) - 16), len(entries))] if entries else []
        except Exception:  # noqa: BLE001 - formats without an index say nothing here
            return
        if not tail:
            return
        need = max(e.pos + e.size for e in tail)
        have = os.path.getsize(self.path)
        if need > have:
            raise VideoError(f"{self.path}: truncated file: {have} bytes, but its index reaches byte {need}")

    def indexed_single_keyframe(self) -> bool:
        """True when the container's own index lists every packet (MP4, AVI) and only one key frame.
        Stops at the second key frame, so long videos do not walk their whole index."""
        try:
            entries = self._stream.index_entries
            n = len(entries) if entries is not None else 0
            if not self.header_frames or n < self.header_frames:
                return False
            keys = 0
            for i in range(n):
                if entries[i].is_keyframe:
                    keys += 1
                    if keys > 1:
                        return False
            return True
        except Exception:  # noqa: BLE001 - an index PyAV cannot read says nothing
            return False

    # -- decoding ---------------------------------------------------------------------------------

    def _restart(self, fast: bool = False) -> None:
        """A fresh demuxer and decoder for a new pass from the start. `fast` (analysis-grade
        decoding) skips the in-loop deblocking filter of H.264/HEVC-style codecs on every picture:
        each frame is still decoded, but later pictures predict from unfiltered ones, so luma drifts
        from the exact decode (at 64 px wide, about 0.3-1.6 levels on average on the shared real
        videos, single pixels up to ~30 late in a long group of pictures) for 10-18% less decoding
        CPU on the shared H.264 videos. Codecs without such a filter, or that ignore the option, decode exactly."""
        if self._used:
            self._container.close()
            self._container = open_container(self.path)
            self._stream = self._container.streams[self.stream_index]
        self._used = True
        st = self._stream
        # Frame + slice threads; a count of 0 lets FFmpeg pick one per core.
        st.thread_type = "AUTO"
        st.codec_context.thread_count = max(0, int(self.threads))
        if fast:
            st.codec_context.options = {"skip_loop_filter": "all"}

    def _corrupt(self, what: str, where: str) -> CorruptVideoError:
        return CorruptVideoError(f"{self.path}: corrupt video data {where}: {what} "
                                 "(tolerant mode skips such frames and counts them)")

    def _raw(self, state: _PassState) -> Iterator[av.VideoFrame]:
        """Decoded pictures in display order. A packet the decoder rejects raises (strict) or is skipped
        and counted (tolerant); frame threading reports it a few packets late."""
        packets = self._container.demux(self._stream)
        npacket = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:  # the container itself is damaged (e.g. truncated)
                if self.strict:
                    raise self._corrupt(ffmpeg_message(exc), f"after packet {npacket}") from None
                state.errors += 1
                break
            if packet.is_corrupt:  # the demuxer read it short or damaged
                if self.strict:
                    raise self._corrupt("damaged or incomplete packet", f"at packet {npacket}")
                state.errors += 1
                npacket += 1
                continue
            try:
                frames = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError as exc:
                if self.strict:
                    t = float(packet.pts * self.time_base) if packet.pts is not None else None
                    where = f"near packet {npacket}" + (f" (t={t:.3f}s)" if t is not None else "")
                    raise self._corrupt(ffmpeg_message(exc), where) from None
                state.errors += 1
                npacket += 1
                continue
            npacket += 1
            for frame in frames:
                # A picture the decoder concealed is kept in tolerant mode: whether FFmpeg flags it
                # depends on the threading mode, and the frame count must not.
                if self.strict and frame.is_corrupt:
                    raise self._corrupt("the decoder flagged a damaged picture", f"near packet {npacket - 1}")
                yield frame
        state.complete = True

    def frames(self, start_s: float | None = None, fast: bool = False) -> Iterator[Decoded]:
        """Every decoded frame in order: (index, seconds from the first frame, picture).

        With `start_s` and timestamps already known (a full pass ran: `info`, `timestamps()`),
        the pass seeks to the key frame before `start_s` and numbers frames from the known
        timestamps; frames before `start_s` may still come (callers filter). Should the frames
        after the seek not line up with the known ones (damaged files decode differently), it
        decodes from the start instead. A pass from the start that reaches the end records its
        timestamps as `self.scan`."""
        scan = self.scan
        if start_s and scan is not None and scan.first_pts is not None:
            first = int(np.searchsorted(scan.times, start_s - 1e-9))
            if 0 < first < scan.times.size:
                self.seeks += 1
                resume = yield from self._decode(seek_index=first, fast=fast)
                if resume is None:
                    return
                self.seek_fallbacks += 1
                yield from self._decode(skip_below=resume, fast=fast)
                return
        yield from self._decode(fast=fast)

    def _decode(self, seek_index: int | None = None, skip_below: int = 0, fast: bool = False):
        """One pass (see `frames`). Returns None when done, or the next frame number to decode
        from the start when frames after a seek do not match the known timestamps."""
        self._restart(fast)
        state = _PassState()
        self._pass = state
        seeking = seek_index is not None
        scan = self.scan
        if seeking:
            target = scan.first_pts + int(round(scan.times[seek_index] / self.time_base))
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        window: deque = deque()
        heap: list[int] = []
        first_pts: int | None = scan.first_pts if seeking else None
        prev_pts: int | None = None
        prev_dur: int | None = None
        index = 0  # the next frame's number (after a seek: set by the first frame)
        synced = not seeking
        # int arithmetic: the same correctly rounded float as float(Fraction), ~70x cheaper per frame
        tb_num, tb_den = self.time_base.numerator, self.time_base.denominator

        def emit():
            """The next Decoded, or an int (where to resume from the start) on a mismatch."""
            nonlocal first_pts, index, synced
            frame = window.popleft()
            pts = heapq.heappop(heap)
            if first_pts is None:
                first_pts = pts
            t = (pts - first_pts) * tb_num / tb_den
            if seeking:
                i = int(np.searchsorted(scan.times, t - 1e-9))
                ok = i < scan.times.size and abs(scan.times[i] - t) < 1e-6
                if not synced:
                    if not ok or i > seek_index:
                        return 0  # landed after the wanted frame, or off the known timeline
                    index, synced = i, True
                elif not ok or i != index:
                    return index
            else:
                state.times.append(t)
            out = Decoded(index, t, frame)
            index += 1
            return out

        for frame in self._raw(state):
            if self.rotation is None:
                self.rotation = rotation_of(frame)
                self.coded_size = (frame.width, frame.height)
            pts = frame.pts
            if pts is None:  # no timestamp: continue the previous frame's clock
                step = prev_dur or self._nominal_step()
                pts = (prev_pts + step) if prev_pts is not None else 0
            dur = frame.duration or None
            prev_pts, prev_dur = pts, dur or prev_dur
            state.last_duration = dur
            window.append(frame)
            heapq.heappush(heap, pts)
            if len(window) > _REORDER_DEPTH:
                d = emit()
                if isinstance(d, int):
                    return d
                if d.index >= skip_below:
                    yield d
        while window:
            d = emit()
            if isinstance(d, int):
                return d
            if d.index >= skip_below:
                yield d
        if state.complete and not seeking and not skip_below:
            if not state.times:
                raise VideoError(f"{self.path}: no decodable video frames"
                                 + (f" ({state.errors} decode errors)" if state.errors else ""))
            self._record_scan(state, first_pts)
        return None

    def _record_scan(self, state: _PassState, first_pts: int | None) -> None:
        """Keep what a complete pass from the start saw (timestamps, errors, picture geometry)."""
        last = float(state.last_duration * self.time_base) if state.last_duration else None
        w, h = self.coded_size
        self.scan = Scan(times=np.asarray(state.times, dtype=np.float64), last_duration_s=last,
                         decode_errors=state.errors, coded_width=w, coded_height=h,
                         rotation=self.rotation or 0, sar=self.sar, first_pts=first_pts)

    def record_range_pass(self, pts: list[int], last_duration: int | None, coded_size: tuple[int, int],
                          rotation: int) -> None:
        """Record a complete, error-free pass made elsewhere (keyframe_ranges) from its sorted frame pts."""
        first = pts[0]
        num, den = self.time_base.numerator, self.time_base.denominator
        state = _PassState(errors=0, times=[(p - first) * num / den for p in pts], last_duration=last_duration,
                           complete=True)
        self._pass = state
        self.rotation, self.coded_size = rotation, coded_size
        self._record_scan(state, first)

    @property
    def last_pass_errors(self) -> int:
        """Corrupt packets skipped so far by the latest pass (it may have stopped early)."""
        return self._pass.errors if self._pass is not None else 0

    def _nominal_step(self) -> int:
        if self.nominal_fps:
            return max(1, int(round(1.0 / (self.nominal_fps * self.time_base))))
        return 1

    def run_scan(self) -> Scan:
        """Decode everything once without converting pixels (counts frames, errors, timestamps)."""
        if self.scan is None:
            for _ in self.frames():
                pass
        return self.scan

    def close(self) -> None:
        self._container.close()
