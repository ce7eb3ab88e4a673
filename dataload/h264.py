"""The project's video writer (PyAV): curated clips, generated videos and synthetic test videos are all
encoded here; H.264 with the options that make the same frames give the same bytes.

Determinism: threads are pinned (1 by default), and x264's CPU features are pinned to at most AVX2. With
AVX-512 enabled, the libx264 that PyAV bundles gives different bytes for the same frames from one
encode to the next in the same process (measured: 19 different outputs in 25 encodes of a 320x176 clip;
1 with the pin, at the same speed). SSE4.2 and AVX2 give identical bytes, so machines with and without
AVX2 agree too.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from dataload.files import atomic_path

TIME_BASE = Fraction(1, 90000)  # the MPEG clock: exact for 24/25/30/30000:1001 rates alike

# x264 CPU flag -> the Linux /proc/cpuinfo flag that says the CPU has it (AVX-512 deliberately absent)
_X264_FLAGS = {"MMX2": "sse", "SSE": "sse", "SSE2": "sse2", "SSE3": "pni", "SSSE3": "ssse3", "SSE4.1": "sse4_1",
               "SSE4.2": "sse4_2", "AVX": "avx", "AVX2": "avx2", "FMA3": "fma", "BMI1": "bmi1", "BMI2": "bmi2",
               "LZCNT": "abm"}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pinned_asm() -> str | None:
    """x264's `asm` value: this CPU's features up to AVX2 (None where we cannot tell: x264 decides)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    have = _cpu_flags()
    if not have:
        return None
    return ",".join(name for name, flag in _X264_FLAGS.items() if flag in have)


def x264_options(crf: int, preset: str, threads: int = 1) -> dict[str, str]:
    opts = {"crf": str(crf), "preset": preset, "threads": str(threads)}
    asm = pinned_asm()
    if asm:
        opts["x264-params"] = f"asm={asm}"
    return opts


# container format by file suffix (writes go to a temporary name, whose suffix says nothing)
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
            ".ts": "mpegts", ".flv": "flv", ".ogv": "ogg", ".mpg": "mpeg", ".mpeg": "mpeg", ".y4m": "yuv4mpegpipe"}


class VideoWriter:
    """RGB frames encoded into a video file frame by frame (any PyAV encoder and container): `write_pts`
    each frame, then `close()` (flush, rename into place) or `abort()` (nothing stays). Written under a
    temporary name. Odd sizes are padded to even by repeating the last row/column (yuv420p needs even).
    H264Writer is the project's H.264 configuration of it; dataload.synthetic makes test videos with it."""

    def __init__(self, path: str | os.PathLike, *, codec: str, rate: Fraction, time_base: Fraction,
                 options: dict[str, str], pix_fmt: str = "yuv420p", threads: int = 1, container: str | None = None,
                 stream_time_base: bool = False):
        import av

        self._av = av
        self.codec, self.rate, self.time_base, self.pix_fmt = codec, rate, time_base, pix_fmt
        self.options, self.threads, self.stream_time_base = options, threads, stream_time_base
        fmt = container or _FORMATS.get(Path(path).suffix.lower())
        if fmt is None:
            raise ValueError(f"no container format known for {Path(path).name!r}")
        self._stream = None
        self._files = contextlib.ExitStack()
        try:  # the container closes before the temporary file is renamed (the stack unwinds in reverse)
            tmp = self._files.enter_context(atomic_path(path))
            self._out = self._files.enter_context(av.open(str(tmp), "w", format=fmt))
        except BaseException:
            self._files.close()
            raise

    def _open_stream(self, w: int, h: int):
        st = self._out.add_stream(self.codec, rate=self.rate)
        st.width, st.height, st.pix_fmt = w + w % 2, h + h % 2, self.pix_fmt
        st.codec_context.thread_count = self.threads
        st.codec_context.time_base = self.time_base
        if self.stream_time_base:
            st.time_base = self.time_base
        st.options = self.options
        return st

    def write_pts(self, pts: int, arr: np.ndarray) -> None:
        """One RGB uint8 frame at `pts` (in `time_base` units)."""
        h, w = arr.shape[:2]
        st = self._stream
        if st is None:
            st = self._stream = self._open_stream(w, h)
        if (h + h % 2, w + w % 2) != (st.height, st.width):
            raise ValueError(f"frame size {w}x{h} differs from the first frame's {st.width}x{st.height}")
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        for pkt in st.encode(frame):
            self._out.mux(pkt)

    def close(self) -> None:
        """Flush the encoder and put the file in place."""
        try:
            if self._stream is None:
                raise ValueError("a video file needs at least one frame")
            for pkt in self._stream.encode():
                self._out.mux(pkt)
        except BaseException as exc:
            self._files.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._files.close()

    def abort(self) -> None:
        """Discard the file (nothing is left under either name)."""
        err = RuntimeError("aborted")
        self._files.__exit__(RuntimeError, err, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class H264Writer(VideoWriter):
    """The project's H.264 (libx264, yuv420p, pinned options: the same frames give the same bytes):
    `write(time_s, rgb)` for each frame, times relative to the first frame, on the 90 kHz MPEG clock."""

    def __init__(self, path: str | os.PathLike, *, fps: float, crf: int = 18, preset: str = "medium",
                 threads: int = 1, container: str = "mp4"):
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        super().__init__(path, codec="libx264", rate=rate, time_base=TIME_BASE,
                         options=x264_options(crf, preset, threads), threads=threads, container=container)
        self.written: list[float] = []  # frame times on the 1/90000 s clock
        self._last_pts = -1

    def write(self, t: float, arr: np.ndarray) -> None:
        pts = max(int(round(t / TIME_BASE)), self._last_pts + 1)  # strictly increasing, even for odd stamps
        self.write_pts(pts, arr)
        self._last_pts = pts
        self.written.append(float(pts * TIME_BASE))


def encode_h264(frames: Iterable[tuple[float, np.ndarray]], path: str | os.PathLike, *, fps: float, crf: int = 18,
                preset: str = "medium", threads: int = 1, container: str = "mp4") -> list[float]:
    """Encode (time_s, RGB uint8 frame) pairs, times relative to the first frame, as yuv420p H.264 into
    `path` (see H264Writer). Returns the frame times written (on the 1/90000 s clock)."""
    with H264Writer(path, fps=fps, crf=crf, preset=preset, threads=threads, container=container) as out:
        for t, arr in frames:
            out.write(t, arr)
    return out.written


def encode_frames(frames: np.ndarray, path: str | os.PathLike, *, fps: float, crf: int = 18,
                  preset: str = "medium", threads: int = 1) -> Path:
    """(T, H, W, 3) uint8 frames at a constant `fps` into an H.264 mp4 (see `encode_h264`)."""
    encode_h264(((i / fps, f) for i, f in enumerate(frames)), path, fps=fps, crf=crf, preset=preset, threads=threads)
    return Path(path)
