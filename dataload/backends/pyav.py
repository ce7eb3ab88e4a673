"""PyAV backend: opens a container, picks the best video stream, decodes every frame in order with
timestamps, tolerant or strict, and converts frames to RGB or luma arrays in display orientation.

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
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from dataload.backends.selection import GridSelector
from dataload.backends.swscale import SWS_BILINEAR, SwsConverter
from dataload.errors import CorruptVideoError, VideoError
from dataload.files import NotRegularFileError, regular_file_size
from dataload.video_info import StreamInfo, display_size

# Decoded frames may carry out-of-order pts (AVI with packed B-frames stores them per packet, not per
# picture). The decoder emits pictures in display order, so the k-th frame gets the k-th smallest pts
# of a small look-ahead window.
_REORDER_DEPTH = 4


def open_container(path: str) -> av.container.InputContainer:
    """Open `path` for reading, turning every way it can fail into one clear line.

    Only regular files are opened: a FIFO, socket, device or folder is refused with its kind named
    (opening a FIFO by path would block until a writer appears)."""
    path = os.fspath(path)
    try:
        size = regular_file_size(path, "video")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except NotRegularFileError as exc:
        raise VideoError(str(exc)) from None
    if size == 0:
        raise VideoError(f"{path}: empty file (0 bytes), not a video")
    try:
        return av.open(path, mode="r")
    except av.error.FFmpegError as exc:
        reason = _short(exc)
        raise VideoError(f"{path}: not a readable video ({reason})") from None


def _short(exc: BaseException) -> str:
    """FFmpeg's message without the errno prefix, on one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    log = getattr(exc, "log", None)
    if log and len(log) >= 3 and log[2]:
        text = f"{text}: {str(log[2]).strip()}"
    return " ".join(str(text).split())


def choose_stream(container: av.container.InputContainer, path: str, stream: int | None) -> av.video.stream.VideoStream:
    """The requested video stream (by container index), else the best one: most pixels, then the
    default-flagged one, then the higher frame rate. Cover art (attached pictures) is never chosen."""
    videos = [s for s in container.streams.video
              if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
    if stream is not None:
        for s in container.streams.video:
            if s.index == stream:
                return s
        kinds = ", ".join(f"{s.index}:{s.type}" for s in container.streams)
        raise VideoError(f"{path}: stream {stream} is not a video stream (streams: {kinds or 'none'})")
    if not videos:
        raise VideoError(f"{path}: no video stream")

    def rank(s):
        cc = s.codec_context
        default = bool(int(s.disposition) & int(av.stream.Disposition.default))
        rate = float(s.average_rate or s.guessed_rate or 0)
        return ((cc.width or 0) * (cc.height or 0), default, rate, -s.index)

    return max(videos, key=rank)


def stream_infos(container: av.container.InputContainer) -> list[StreamInfo]:
    out = []
    for s in container.streams:
        cc = s.codec_context
        codec = cc.name if cc is not None else None
        language = s.metadata.get("language") or s.metadata.get("LANGUAGE")
        default = bool(int(s.disposition) & int(av.stream.Disposition.default))
        if s.type == "video":
            rate = s.average_rate or s.guessed_rate
            out.append(StreamInfo(index=s.index, type=s.type, codec=codec, width=cc.width or None,
                                  height=cc.height or None, fps=float(rate) if rate else None,
                                  num_frames=s.frames or None, language=language, default=default))
        else:
            out.append(StreamInfo(index=s.index, type=s.type, codec=codec, language=language,
                                  num_frames=s.frames or None, default=default))
    return out


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
class Decoded:
    index: int
    time_s: float
    frame: av.VideoFrame


@dataclass
class _PassState:
    """Bookkeeping of one decoding pass (errors, first pts, a scan when it ran to the end)."""

    errors: int = 0
    times: list = field(default_factory=list)
    last_duration: int | None = None
    complete: bool = False


def rotation_of(frame: av.VideoFrame) -> int:
    """Clockwise degrees that turn the decoded picture upright (FFmpeg's display matrix is counter-clockwise)."""
    try:
        angle = frame.rotation
    except Exception:  # noqa: BLE001 - no side data or an unreadable matrix means upright
        return 0
    return int(round(-float(angle) / 90.0)) % 4 * 90


# -- reading ----------------------------------------------------------------------------------------

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
            from dataload.backends.keyframe_ranges import read_luma_ranges  # it builds on this module

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
                    raise self._corrupt(_short(exc), f"after packet {npacket}") from None
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
                    raise self._corrupt(_short(exc), where) from None
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


# -- pixels -------------------------------------------------------------------------------------------

class FrameConverter:
    """Turns decoded pictures into uint8 arrays in display orientation at a target size.

    `size` is the output (h, w) after rotation; None keeps the display size (pixel aspect applied).
    """

    def __init__(self, coded_w: int, coded_h: int, sar: Fraction, rotation: int,
                 size: tuple[int, int] | None, luma: bool):
        disp_w, disp_h = display_size(coded_w, coded_h, sar, rotation)
        out_h, out_w = resolve_size(size, disp_h, disp_w)
        self.out_h, self.out_w = out_h, out_w
        self.rotation = rotation
        # Scale in the coded orientation, then rotate.
        self.scale_w, self.scale_h = (out_h, out_w) if rotation in (90, 270) else (out_w, out_h)
        self.resize = (self.scale_w, self.scale_h) != (coded_w, coded_h)
        self.luma = luma
        self._k = -(rotation // 90)  # np.rot90 turns counter-clockwise
        self._limited_lut = (np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255)
                             .astype(np.uint8))
        # One swscale context for every frame (frame.reformat builds a new one per frame).
        self._sws = VideoReformatter()
        self._direct_sws: SwsConverter | None = None
        self._direct_off: set = set()  # frame layouts the direct path cannot take
        self._scratch: np.ndarray | None = None
        self._luma_plans: dict = {}

    def _direct(self, frame: av.VideoFrame) -> SwsConverter | None:
        key = SwsConverter.key_of(frame)
        if self._direct_sws is not None and self._direct_sws.key == key:
            return self._direct_sws
        if key in self._direct_off:
            return None
        # Only plain conversions go direct (bit-identical to PyAV); resizing keeps PyAV's scaler,
        # whose filters differ from the legacy sws_scale entry point's.
        same = (self.scale_w, self.scale_h) == (frame.width, frame.height)
        sws = SwsConverter.create(frame, frame.width, frame.height, "rgb24", SWS_BILINEAR) if same else None
        if sws is None:
            self._direct_off.add(key)
        self._direct_sws = sws
        return sws

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.out_h, self.out_w) if self.luma else (self.out_h, self.out_w, 3)

    def __call__(self, frame: av.VideoFrame, dst: np.ndarray | None = None) -> np.ndarray:
        """The picture as an array; with `dst` (shape `self.shape`) written into it, saving a copy."""
        if not self.luma:
            sws = self._direct(frame)
            if sws is not None:  # one swscale pass straight into the output (or a scratch to rotate)
                if self._k % 4 == 0:
                    return sws(frame, dst if dst is not None else np.empty(self.shape, np.uint8))
                if self._scratch is None:
                    self._scratch = np.empty((self.scale_h, self.scale_w, 3), np.uint8)
                arr = np.rot90(sws(frame, self._scratch), self._k)
                if dst is None:
                    return np.ascontiguousarray(arr)
                np.copyto(dst, arr)
                return dst
        arr = self._luma(frame) if self.luma else self._rgb(frame)
        if self._k % 4:
            arr = np.rot90(arr, self._k)
        if dst is not None:
            np.copyto(dst, arr)
            return dst
        return np.ascontiguousarray(arr)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if not self.resize and frame.width == self.scale_w and frame.height == self.scale_h:
            return self._sws.reformat(frame, format="rgb24", threads=0).to_ndarray()
        shrink = self.scale_w * self.scale_h < frame.width * frame.height
        return self._sws.reformat(frame, width=self.scale_w, height=self.scale_h, format="rgb24",
                                  interpolation="AREA" if shrink else "BICUBIC", threads=1).to_ndarray()

    def _luma(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.format.name, frame.color_range)
        plan = self._luma_plans.get(key)
        if plan is None:  # once per pixel format (PyAV builds the format's objects on every access)
            plan = self._luma_plans[key] = _luma_plan(frame.format, int(frame.color_range))
        bits, full = plan
        if bits:
            plane = frame.planes[0]
            if bits <= 8:
                y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
            else:  # 9-16 bit little-endian luma: keep the top 8 bits
                y16 = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
                y = (y16[:, :plane.width] >> (bits - 8)).astype(np.uint8)
            y = self._resize_plane(y)
            # Video-range luma (16..235) stretched to 0..255 so it equals Y' computed from the RGB path.
            return y if full else cv2.LUT(y, self._limited_lut)
        gray = self._sws.reformat(frame, format="gray", threads=1).to_ndarray()
        return self._resize_plane(gray)

    def _resize_plane(self, y: np.ndarray) -> np.ndarray:
        w, h = self.scale_w, self.scale_h
        if y.shape[1] == w and y.shape[0] == h:
            return np.array(y, copy=True)  # the decoder reuses its buffer
        # OpenCV's area filter is ~15x slower at large non-integer factors than at exactly 2x, so
        # halve (2x2 means) while the picture is 2x the target or more, then finish with one area pass
        # of a factor under 2 (about twice as fast as stopping the halving at 4x).
        while y.shape[1] >= 2 * w and y.shape[0] >= 2 * h:
            hh, ww = y.shape[0] // 2, y.shape[1] // 2
            y = cv2.resize(y[: 2 * hh, : 2 * ww], (ww, hh), interpolation=cv2.INTER_AREA)
        shrink = w * h < y.shape[0] * y.shape[1]
        return cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _luma_plan(fmt, color_range: int) -> tuple[int, bool]:
    """(bits of the luma plane, or 0 when the format has none to take as is; full range?)."""
    comp = fmt.components[0]
    bits = comp.bits if comp.is_luma and comp.plane == 0 and not fmt.is_rgb else 0
    return bits, fmt.name.startswith("yuvj") or color_range == 2  # 2: JPEG (full) range


class ConvertThread:
    """Converts frames into their output slots on worker threads while the caller keeps decoding.

    FFmpeg decodes and swscale converts with the GIL released, so a bulk read overlaps pixel
    conversion with decoding (a plain loop runs them in turn on one thread). Each worker has its own
    converter (swscale contexts are not shared between threads); frames go to distinct slots, so
    their order of completion does not matter. A short queue bounds the decoded frames held."""

    def __init__(self, make_converter, workers: int = 2, depth: int = 8):
        import queue
        import threading

        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, args=(make_converter(),), name=f"vfm-convert-{i}",
                                          daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self, conv) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:
                try:
                    conv(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the decoding thread
                    self._error = exc

    def put(self, frame: av.VideoFrame, slot: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((frame, slot))

    def close(self) -> None:
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join()
        if self._error is not None:
            raise self._error


class FrameSink:
    """Storage for decoded frames, filled slot by slot: a caller's buffer (`out`, reused between
    reads so no fresh memory is touched), or chunks sized from a frame-count hint (the header may
    lie either way: extra chunks are joined at the end, spare slots are cut off)."""

    def __init__(self, frame_shape: tuple[int, ...], hint: int, out=None):
        self.frame_shape = tuple(frame_shape)
        self.n = 0
        self.out = None
        if out is not None:
            arr = out.numpy() if hasattr(out, "numpy") else out
            if arr.dtype != np.uint8 or tuple(arr.shape[1:]) != self.frame_shape:
                raise ValueError(f"out must be uint8 with frame shape {self.frame_shape}, got "
                                 f"{arr.dtype} {tuple(arr.shape)}")
            self.out = arr
            self.chunks = [arr]
        else:
            self.chunks = [np.empty((max(1, hint),) + self.frame_shape, np.uint8)]
        self._used = [0]

    def slot(self) -> np.ndarray:
        chunk = self.chunks[-1]
        if self._used[-1] == chunk.shape[0]:
            if self.out is not None:
                raise ValueError(f"out has room for {chunk.shape[0]} frames; the read returns more")
            chunk = np.empty((max(16, self.n // 2),) + self.frame_shape, np.uint8)
            self.chunks.append(chunk)
            self._used.append(0)
        i = self._used[-1]
        self._used[-1] += 1
        self.n += 1
        return chunk[i]

    def result(self) -> np.ndarray:
        if len(self.chunks) == 1:
            whole = self.chunks[0]
            if self.out is None and self.n < whole.shape[0] // 2:
                return whole[: self.n].copy()  # the header overstated a lot: do not keep the rest
            return whole[: self.n]
        return np.concatenate([c[:u] for c, u in zip(self.chunks, self._used)])


def resolve_size(size, disp_h: int, disp_w: int) -> tuple[int, int]:
    """(h, w) output size; one side may be -1/None to keep the display aspect."""
    if size is None:
        return disp_h, disp_w
    if isinstance(size, int):
        raise ValueError("size must be (height, width)")
    h, w = size
    h = None if h in (None, -1) else int(h)
    w = None if w in (None, -1) else int(w)
    if h is None and w is None:
        return disp_h, disp_w
    if h is None:
        h = max(1, int(round(disp_h * w / disp_w)))
    if w is None:
        w = max(1, int(round(disp_w * h / disp_h)))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w
