"""The project's H.264 writer (PyAV/libx264): curated clips, generated videos and synthetic test videos
are all encoded here, with the options that make the same frames give the same bytes.

Determinism: threads are pinned (1 by default), and x264's CPU features are pinned to at most AVX2. With
AVX-512 enabled, the libx264 that PyAV bundles gives different bytes for the same frames from one
encode to the next in the same process (measured: 19 different outputs in 25 encodes of a 320x176 clip;
1 with the pin, at the same speed). SSE4.2 and AVX2 give identical bytes, so machines with and without
AVX2 agree too.
"""

from __future__ import annotations

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


def encode_h264(frames: Iterable[tuple[float, np.ndarray]], path: str | os.PathLike, *, fps: float, crf: int = 18,
                preset: str = "medium", threads: int = 1, container: str = "mp4") -> list[float]:
    """Encode (time_s, RGB uint8 frame) pairs, times relative to the first frame, as yuv420p H.264 into
    `path` (written under a temporary name, renamed when complete). Odd sizes are padded to even by
    repeating the last row/column. Returns the frame times written (on the 1/90000 s clock)."""
    import av

    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    written: list[float] = []
    last_pts = -1
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=container) as out:
            st = None
            for t, arr in frames:
                h, w = arr.shape[:2]
                if st is None:
                    st = out.add_stream("libx264", rate=rate)
                    st.width, st.height, st.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
                    st.codec_context.thread_count = threads
                    st.codec_context.time_base = TIME_BASE
                    st.options = x264_options(crf, preset, threads)
                if (h + h % 2, w + w % 2) != (st.height, st.width):
                    raise ValueError(f"frame size {w}x{h} differs from the first frame's {st.width}x{st.height}")
                if h % 2 or w % 2:
                    arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                pts = max(int(round(t / TIME_BASE)), last_pts + 1)  # strictly increasing, even for odd stamps
                frame.pts, frame.time_base = pts, TIME_BASE
                last_pts = pts
                written.append(float(pts * TIME_BASE))
                for pkt in st.encode(frame):
                    out.mux(pkt)
            if st is None:
                raise ValueError("encode_h264 needs at least one frame")
            for pkt in st.encode():
                out.mux(pkt)
    return written


def encode_frames(frames: np.ndarray, path: str | os.PathLike, *, fps: float, crf: int = 18,
                  preset: str = "medium", threads: int = 1) -> Path:
    """(T, H, W, 3) uint8 frames at a constant `fps` into an H.264 mp4 (see `encode_h264`)."""
    encode_h264(((i / fps, f) for i, f in enumerate(frames)), path, fps=fps, crf=crf, preset=preset, threads=threads)
    return Path(path)
