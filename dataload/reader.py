"""`VideoReader`: decode a time range at a target fps and size into uint8 tensors, with pluggable backends.

    with VideoReader("clip.mp4") as r:
        r.info                                   # VideoInfo (one decoding pass, cached)
        r.read(start_s=2, end_s=4, fps=8, size=(224, -1))   # (T, H, W, 3) uint8, display orientation
        r.read(luma=True, size=(-1, 64))         # (T, h, 64) luma, no RGB conversion (analysis path)
        r.read_array(luma=True, size=(-1, 64))   # the same as a numpy array (torch is never imported)
        for i, t, frame in r.iter_frames(luma=True, size=(36, 64)): ...

Frames are numbered as decoded; times are seconds from the first frame (DESIGN.md section 2).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Iterator

import numpy as np

from dataload.backends.frame_convert import FrameConverter
from dataload.backends.pyav import PyAVSource, resolve_size
from dataload.backends.pyav_reads import Decoded
from dataload.backends.selection import GridSelector
from dataload.errors import VideoError
from dataload.video_info import VideoInfo, display_size

if TYPE_CHECKING:  # torch is imported where a tensor is made: analysis reads start without it
    import torch

BACKENDS = ("auto", "pyav", "decord", "dali")


class VideoReader:
    """One video stream (the best one unless `stream` names a container stream index).

    backend: "pyav" (every codec), "decord" (H.264/HEVC/MPEG-4 random access; other codecs and
    damaged files fall back to PyAV), "dali" (GPU; needs the [gpu] extra), "auto" (decord for
    sparse reads of codecs it decodes, PyAV otherwise).
    strict: the first corrupt packet raises CorruptVideoError; otherwise corrupt data is skipped and
    counted in `decode_errors`. threads: decoder threads, 0 lets FFmpeg choose; a whole-video luma
    read decodes key-frame ranges side by side, one thread each (threads=1: never).
    fast_luma: luma reads (PyAV) decode analysis-grade, as shot splitting does: every frame is
    decoded but the codec's deblocking filter is skipped, so luma differs from the exact decode by
    about a level on average at analysis sizes (up to a few tens on single pixels), for about a
    sixth less decoding work on H.264. Off by default: scores with tuned thresholds (sharpness) read exact.
    """

    def __init__(self, path, *, backend: str = "auto", strict: bool = False, threads: int = 0,
                 stream: int | None = None, fast_luma: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.path = os.fspath(path)
        self.strict = strict
        self.threads = threads
        self.requested_backend = backend
        self._pyav = PyAVSource(self.path, stream=stream, threads=threads, strict=strict)
        self._pyav.fast_luma = bool(fast_luma)
        self._info: VideoInfo | None = None
        self._alt = None  # decord or DALI source, opened on first use
        self._alt_tried = False
        self.backend = "pyav"
        try:
            if backend in ("decord", "dali"):
                self._alt = _open_alt(backend, self)
                if self._alt is not None:
                    self.backend = backend
        except BaseException:
            self._pyav.close()
            raise
        self._errors: int | None = None

    # -- facts --------------------------------------------------------------------------------------

    @property
    def info(self) -> VideoInfo:
        """Probe facts of this stream; the first access decodes the video once (no pixel conversion)
        unless a full read already did."""
        if self._info is None:
            from dataload.probe import info_from_scan

            self._info = info_from_scan(self._pyav, self._pyav.run_scan())
        return self._info

    @property
    def header_size(self) -> tuple[int, int]:
        """(width, height) of the coded pictures as the container and codec headers declare them, known
        without decoding (0 where the headers do not say): check it before decoding a hostile file."""
        return int(self._pyav.header_width or 0), int(self._pyav.header_height or 0)

    @property
    def decode_errors(self) -> int:
        """Corrupt packets skipped by the last read (before any read: by a full decoding pass)."""
        if self._errors is None:
            return self.info.decode_errors
        return self._errors

    def timestamps(self) -> np.ndarray:
        """Seconds from the first frame's timestamp, one per decoded frame (float64)."""
        return self._pyav.run_scan().times.copy()

    # -- reading ------------------------------------------------------------------------------------

    def read(self, *, start_s: float | None = None, end_s: float | None = None, fps: float | None = None,
             num_frames: int | None = None, indices=None, size=None, luma: bool = False,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """Frames as a uint8 tensor: (T, H, W, 3) RGB, or (T, H, W) luma with `luma=True`.

        - nothing: every decoded frame in [start_s, end_s).
        - fps: for each time start + k / fps in [start_s, end_s), the frame with the nearest timestamp
          (frames repeat when fps is above the video's); num_frames caps the count.
        - num_frames alone: that many grid times spread evenly over [start_s, end_s).
        - indices: exactly these decoded frame numbers, in the given order (no other selection).
        size=(h, w) resizes after rotation and pixel aspect; one side -1 keeps the aspect.
        out: a uint8 tensor with room for the frames (first dimension >= T) to fill instead of
        allocating; the result is then `out[:T]`. Reusing one across reads avoids touching fresh memory.
        """
        import torch  # here, not at import: analysis paths (read_array) never need it

        arr = self.read_array(start_s=start_s, end_s=end_s, fps=fps, num_frames=num_frames, indices=indices,
                              size=size, luma=luma, out=None if out is None else out.numpy())
        return out[: arr.shape[0]] if out is not None else torch.from_numpy(arr)

    def read_array(self, *, start_s: float | None = None, end_s: float | None = None, fps: float | None = None,
                   num_frames: int | None = None, indices=None, size=None, luma: bool = False,
                   out: np.ndarray | None = None) -> np.ndarray:
        """`read` as a numpy array (`out`, when given, a uint8 array to fill)."""
        start, end = _check_range(start_s, end_s)
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be positive, got {fps}")
        if num_frames is not None and int(num_frames) < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        src = self._source_for(sparse=indices is not None or fps is not None or num_frames is not None)
        if indices is not None:
            if any(v is not None for v in (start_s, end_s, fps, num_frames)):
                raise ValueError("indices cannot be combined with start_s/end_s/fps/num_frames")
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            if idx.size and idx.min() < 0:
                raise VideoError(f"{self.path}: frame index {int(idx.min())} out of range (negative)")
            frames = src.read_indices(idx, size, luma)
        elif fps is None and num_frames is None:
            if hasattr(src, "read_all"):
                arr = src.read_all(start, end, size, luma, out)
                self._note_errors(src)
                return self._stack([], size, luma, out) if arr is None else arr
            frames = [f for _, _, f in src.iter_range(start, end, size, luma)]
        else:
            g0 = start or 0.0
            if fps is not None:
                selector = GridSelector(g0, end, 1.0 / fps, None if num_frames is None else int(num_frames))
            else:
                stop = end if end is not None else self.info.duration_s
                n = int(num_frames)
                if n == 0 or stop <= g0:
                    selector = None
                else:
                    selector = GridSelector(g0, stop, (stop - g0) / n, n)
            frames = src.read_grid(selector, start, size, luma) if selector is not None else []
        self._note_errors(src)
        return self._stack(frames, size, luma, out)

    def iter_frames(self, *, size=None, luma: bool = False, start_s: float | None = None,
                    end_s: float | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
        """Every decoded frame in [start_s, end_s) as (index, seconds, array), streamed one at a time."""
        start, end = _check_range(start_s, end_s)
        src = self._source_for(sparse=False)
        yield from src.iter_range(start, end, size, luma)
        self._note_errors(src)

    def decoded(self, *, start_s: float | None = None, end_s: float | None = None) -> Iterator[Decoded]:
        """Every decoded picture in [start_s, end_s) (PyAV), unconverted: `d.index`, `d.time_s`, and
        `d.frame` for the converters of `converter()`. One pass then serves several views of each frame
        (a clip's RGB for the encoder and small luma for its scores, say)."""
        start, end = _check_range(start_s, end_s)
        yield from self._pyav.decoded(start, end)
        self._note_errors(self._pyav)

    def converter(self, size=None, luma: bool = False) -> FrameConverter:
        """The converter a read at `size` (luma or RGB) uses; available once a picture was decoded."""
        if self._pyav.coded_size is None:
            raise ValueError("converter() needs a decoded picture first (iterate decoded())")
        return self._pyav.converter(size, luma)

    def _source_for(self, sparse: bool):
        """The named backend; for "auto", decord's random access for sparse reads of codecs it
        decodes and PyAV's streaming for everything else. `self.backend` says which ran last."""
        if self.requested_backend != "auto":
            return self._alt if self._alt is not None else self._pyav
        if sparse:
            if self._alt is None and not self._alt_tried:
                self._alt_tried = True
                self._alt = _open_alt("decord", self)
            if self._alt is not None:
                self.backend = "decord"
                return self._alt
        self.backend = "pyav"
        return self._pyav

    def _note_errors(self, src) -> None:
        self._errors = src.last_pass_errors

    def _stack(self, frames: list[np.ndarray], size, luma: bool, out: np.ndarray | None = None) -> np.ndarray:
        if frames and out is not None:
            if out.dtype != np.uint8 or out.shape[0] < len(frames) or tuple(out.shape[1:]) != frames[0].shape:
                raise ValueError(f"out must be uint8 with room for {len(frames)} frames of {frames[0].shape}, "
                                 f"got {out.dtype} {tuple(out.shape)}")
            np.stack(frames, out=out[: len(frames)])
            return out[: len(frames)]
        if frames:
            return np.stack(frames)
        if self._pyav.coded_size is not None:
            conv = self._pyav.converter(size, luma)
            h, w = conv.out_h, conv.out_w
        else:
            st = self._pyav
            dw, dh = display_size(st.header_width, st.header_height, st.sar, 0)
            h, w = resolve_size(size, dh, dw)
        return np.zeros((0, h, w) if luma else (0, h, w, 3), dtype=np.uint8)

    def close(self) -> None:
        self._pyav.close()
        if self._alt is not None:
            self._alt.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({self.path!r}, backend={self.backend!r}, stream={self._pyav.stream_index})"


def _check_range(start_s, end_s) -> tuple[float | None, float | None]:
    start = None if start_s is None else float(start_s)
    end = None if end_s is None else float(end_s)
    if start is not None and start < 0:
        raise ValueError(f"start_s must be >= 0, got {start}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end_s ({end}) must be after start_s ({start})")
    return start, end


def _open_alt(name: str, reader: VideoReader):
    """The decord or DALI source for this reader, or None where it cannot decode this video
    (then PyAV reads it)."""
    if name == "decord":
        from dataload.backends.decord import open_decord

        return open_decord(reader._pyav)
    from dataload.backends.dali import open_dali

    return open_dali(reader._pyav)
