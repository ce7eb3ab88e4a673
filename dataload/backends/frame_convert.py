"""Pixels: decoded pictures to uint8 arrays in display orientation at a target size (RGB or luma), the
storage they are written into, and a thread that converts while the caller keeps decoding."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from dataload.backends.swscale import SWS_BILINEAR, SwsConverter
from dataload.video_info import display_size


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
