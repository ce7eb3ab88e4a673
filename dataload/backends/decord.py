"""decord backend: random access (seek to the nearest key frame, decode only what a batch needs) for
the codecs decord reads. Anything else, and any file decord stumbles on, is read by PyAV instead.

Frame numbers and times must match PyAV's, so times come from the container's packet timestamps
(read by PyAV without decoding), not from decord's own estimates (wrong for AVI, for instance).
"""

from __future__ import annotations

import warnings

import numpy as np

from dataload.backends.pyav import PyAVSource, open_container, resolve_size
from dataload.backends.selection import GridSelector
from dataload.files import regular_file_size
from dataload.video_info import display_size

# Codecs decord2 decodes (its FFmpeg build lacks VP9/AV1 software decoders).
DECORD_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg"})


def open_decord(pyav: PyAVSource):
    """A DecordSource for this stream, or None when decord cannot read it (PyAV will)."""
    if pyav.strict or pyav.codec not in DECORD_CODECS:
        return None  # strict decoding needs FFmpeg's per-packet error reports
    try:
        import decord  # noqa: F401
    except ImportError:
        return None
    try:
        regular_file_size(pyav.path, "video")  # decord opens by path itself: never a FIFO or device
        return DecordSource(pyav)
    except Exception:  # noqa: BLE001 - decord raises its own error types on files it cannot index
        return None


def packet_times(path: str, stream_index: int) -> np.ndarray:
    """Presentation times of the stream's packets in display order, seconds from the first."""
    container = open_container(path)
    try:
        st = container.streams[stream_index]
        pts = [p.pts for p in container.demux(st) if p.size and p.pts is not None]
        tb = st.time_base
    finally:
        container.close()
    if not pts:
        return np.zeros(0)
    pts.sort()
    # exact (integer ticks x rational time base, correctly rounded) so times equal PyAV's frame times
    return np.asarray([(p - pts[0]) * tb.numerator / tb.denominator for p in pts], dtype=np.float64)


class DecordSource:
    """Reads with decord; on any decord error the read is redone by PyAV (`fallbacks` counts them)."""

    def __init__(self, pyav: PyAVSource):
        import decord

        self._decord = decord
        self.pyav = pyav
        self.path = pyav.path
        self._readers: dict[tuple[int, int], object] = {}
        base = self._reader(-1, -1)
        self.num_frames = len(base)
        times = packet_times(self.path, pyav.stream_index)
        if times.size != self.num_frames:
            raise ValueError("decord's frame index does not match the container's packets")
        self.times = times
        self.last_pass_errors = 0
        self.fallbacks = 0
        if pyav.scan is not None and pyav.scan.times.size != self.num_frames:
            raise ValueError("decord numbers frames differently (damaged file)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            first = base[0].asnumpy()
        self.coded_h, self.coded_w = first.shape[:2]
        # decord applies the display matrix itself, in ways that differ by angle; rotated videos
        # go to PyAV, which applies it one known way.
        if pyav.rotation is None:
            for _ in pyav.frames():
                break
        if pyav.rotation:
            raise ValueError("rotated video")
        self.rotation = 0

    def _reader(self, width: int, height: int):
        key = (width, height)
        if key not in self._readers:
            vr = self._decord.VideoReader(self.path, ctx=self._decord.cpu(0), width=width, height=height,
                                          num_threads=max(0, self.pyav.threads))
            self._readers[key] = vr
        return self._readers[key]

    def _batch(self, indices: np.ndarray, size, luma: bool) -> list[np.ndarray]:
        import cv2

        disp_w, disp_h = display_size(self.coded_w, self.coded_h, self.pyav.sar, self.rotation)
        out_h, out_w = resolve_size(size, disp_h, disp_w)
        sw, sh = (out_h, out_w) if self.rotation in (90, 270) else (out_w, out_h)
        scale = (-1, -1) if (sw, sh) == (self.coded_w, self.coded_h) else (sw, sh)
        if len(indices) == 0:
            return []
        uniq, inverse = np.unique(indices, return_inverse=True)
        with warnings.catch_warnings():  # decord's NDArray predates NumPy 2's __array_wrap__
            warnings.simplefilter("ignore", DeprecationWarning)
            arr = self._reader(*scale).get_batch(uniq.tolist()).asnumpy()
        k = -(self.rotation // 90)
        frames = []
        for a in arr:
            if luma:
                # BT.601 luma of decord's RGB: the same Y' the PyAV luma path reads from the Y plane.
                a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
            if k % 4:
                a = np.ascontiguousarray(np.rot90(a, k))
            frames.append(a)
        return [frames[j] for j in inverse]

    def _fallback(self, fn, *args):
        self.fallbacks += 1
        out = fn(*args)
        self.last_pass_errors = self.pyav.last_pass_errors
        return out

    def read_indices(self, indices: np.ndarray, size, luma: bool) -> list[np.ndarray]:
        if indices.size and int(indices.max()) >= self.num_frames:
            return self._fallback(self.pyav.read_indices, indices, size, luma)  # raises the clear error
        try:
            out = self._batch(indices, size, luma)
        except self._decord.DECORDError:
            return self._fallback(self.pyav.read_indices, indices, size, luma)
        self.last_pass_errors = 0
        return out

    def _chosen(self, selector: GridSelector | None, start: float | None, end: float | None) -> np.ndarray:
        t = self.times
        ok = np.ones(t.size, dtype=bool)
        if start is not None:
            ok &= t >= start - 1e-9
        if end is not None:
            ok &= t < end - 1e-9
        cand = np.flatnonzero(ok)
        if selector is None:
            return cand
        picked: list[int] = []
        for i in cand:
            picked += selector.feed(int(i), float(t[i]))
            if selector.done:
                break
        if cand.size:
            last = int(cand[-1])
            step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
            stream_end = float(t[last]) + step if last == t.size - 1 else float(t[last + 1])
            picked += selector.finish(stream_end)
        return np.asarray(picked, dtype=np.int64)

    def read_grid(self, selector: GridSelector, start: float | None, size, luma: bool) -> list[np.ndarray]:
        idx = self._chosen(selector, start, selector.end)
        try:
            out = self._batch(idx, size, luma)
        except self._decord.DECORDError:
            selector.k, selector.prev = 0, None
            return self._fallback(self.pyav.read_grid, selector, start, size, luma)
        self.last_pass_errors = 0
        return out

    def iter_range(self, start: float | None, end: float | None, size, luma: bool):
        idx = self._chosen(None, start, end)
        chunk = 32  # bounded memory: decode a few dozen frames at a time
        for lo in range(0, idx.size, chunk):
            part = idx[lo:lo + chunk]
            try:
                frames = self._batch(part, size, luma)
            except self._decord.DECORDError:
                self.fallbacks += 1
                for i, t, f in self.pyav.iter_range(float(self.times[part[0]]), end, size, luma):
                    yield i, t, f
                self.last_pass_errors = self.pyav.last_pass_errors
                return
            for i, f in zip(part, frames):
                yield int(i), float(self.times[i]), f
        self.last_pass_errors = 0

    def close(self) -> None:
        self._readers.clear()
