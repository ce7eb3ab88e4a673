"""`probe(path) -> VideoInfo`: the facts of a video as the reader sees them.

Frame counts and timing come from decoding every frame (headers lie: missing durations, corrupt
packets, AVI frame counts), so probing costs one decoding pass without pixel conversion.
"""

from __future__ import annotations

import numpy as np

from dataload.backends.pyav import PyAVSource, Scan
from dataload.video_info import VideoInfo, display_size, format_sar

# A frame interval further than this from the median (in time-base ticks, or as a fraction of the
# median when that is larger) makes the timing variable; rounding to a coarse time base (1 ms in
# Matroska: 33, 34, 33 ms) stays constant.
_VFR_TICKS = 1.5
_VFR_FRACTION = 0.02


def probe(path, *, strict: bool = False, backend: str = "pyav", stream: int | None = None,
          threads: int = 0) -> VideoInfo:
    """Open, decode every frame once, and describe the chosen (best) video stream.

    Raises FileNotFoundError, VideoError (not a video, empty, no video stream, nothing decodable) or,
    with `strict`, CorruptVideoError at the first corrupt packet."""
    if backend != "pyav":
        # Counting decoded frames and corrupt packets needs FFmpeg's own decoder loop.
        raise ValueError(f"probe supports backend 'pyav' only, got {backend!r}")
    source = PyAVSource(path, stream=stream, threads=threads, strict=strict)
    try:
        return info_from_scan(source, source.run_scan())
    finally:
        source.close()


def info_from_scan(source: PyAVSource, scan: Scan) -> VideoInfo:
    times = scan.times
    n = int(times.size)
    step = _typical_step(times)
    last = scan.last_duration_s if scan.last_duration_s else step
    if not last and source.nominal_fps:
        last = 1.0 / source.nominal_fps
    duration = float(times[-1] - times[0]) + (last or 0.0)
    fps = n / duration if duration > 0 else (source.nominal_fps or 0.0)
    width, height = display_size(scan.coded_width, scan.coded_height, scan.sar, scan.rotation)
    return VideoInfo(
        path=source.path,
        container=source.container_name,
        codec=source.codec,
        width=width,
        height=height,
        coded_width=scan.coded_width,
        coded_height=scan.coded_height,
        sample_aspect_ratio=format_sar(scan.sar),
        rotation=scan.rotation,
        fps=round(fps, 6),
        nominal_fps=round(source.nominal_fps, 6) if source.nominal_fps else None,
        num_frames=n,
        duration_s=round(duration, 6),
        variable_frame_rate=is_variable(times, float(source.time_base)),
        decode_errors=scan.decode_errors,
        stream_index=source.stream_index,
        streams=source.streams,
    )


def _typical_step(times: np.ndarray) -> float | None:
    if times.size < 2:
        return None
    return float(np.median(np.diff(times)))


def is_variable(times: np.ndarray, tick: float) -> bool:
    """Whether frame intervals differ by more than time-base rounding."""
    if times.size < 3:
        return False
    dt = np.diff(times)
    med = float(np.median(dt))
    tol = max(_VFR_TICKS * tick, _VFR_FRACTION * med)
    return bool(np.max(np.abs(dt - med)) > tol)
