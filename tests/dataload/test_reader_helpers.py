"""Tiny videos whose every frame is identifiable, for the reader and probe tests.

Frame i is a flat grey of level `level(i)` with a small bright marker in the top-left corner of the
picture as it should be displayed, so tests can tell which frame came back and which way is up.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H = 64, 48


def level(i: int) -> int:
    return 30 + 6 * i  # distinct, well inside video range for up to ~30 frames


def frame_index(arr: np.ndarray) -> int:
    """Which frame an (H, W[, 3]) uint8 array shows, from its mean level away from the marker."""
    h, w = arr.shape[:2]
    body = arr[h // 2:, w // 2:].astype(np.float64).mean()
    return int(round((body - 30) / 6))


def write(path: Path, times_s: list[float], *, codec: str = "libx264", rotation: int = 0,
          sar: Fraction | None = None, size: tuple[int, int] = (H, W)) -> Path:
    """Encode len(times_s) frames at these exact times (ms time base). `rotation` tags the stream
    with a display matrix (clockwise degrees to display); the stored picture is turned the other
    way so the displayed one has its marker top-left."""
    h, w = size
    tmp = path.with_name(".tmp-" + path.name)
    with av.open(str(tmp), "w") as c:
        st = c.add_stream(codec, rate=25)
        coded_h, coded_w = (w, h) if rotation in (90, 270) else (h, w)
        st.width, st.height = coded_w, coded_h
        st.pix_fmt = "yuv420p"
        st.time_base = Fraction(1, 1000)
        st.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264":
            st.options = {"qp": "0", "threads": "1", "bframes": "0"}
        elif codec == "libvpx-vp9":
            st.options = {"lossless": "1", "threads": "1"}
        if sar is not None:
            st.codec_context.sample_aspect_ratio = sar
        if rotation:
            # FFmpeg's display matrix angle is counter-clockwise.
            st.set_display_rotation(-rotation)
        for i, t in enumerate(times_s):
            shown = np.full((h, w, 3), level(i), np.uint8)
            shown[: h // 6, : w // 6] = 250  # marker at the displayed top-left
            stored = np.ascontiguousarray(np.rot90(shown, rotation // 90))  # undo the display turn
            f = av.VideoFrame.from_ndarray(stored, format="rgb24")
            f.pts = int(round(t * 1000))
            f.time_base = Fraction(1, 1000)
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    os.replace(tmp, path)
    return path


def cfr_times(n: int, fps: float) -> list[float]:
    return [round(i / fps, 3) for i in range(n)]


def vfr_times(n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    steps = rng.integers(20, 90, size=n - 1)  # 20-90 ms between frames
    return [0.0] + [float(x) / 1000 for x in np.cumsum(steps)]
