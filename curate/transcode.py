"""Encode a clip's frames to H.264 MP4: PyAV/libx264 (default, CPU) or NVENC through the ffmpeg program.

libx264 goes through dataload.h264, whose pinned options make the same frames give the same bytes on
every machine and executor (clip bytes are part of the resume contract). Frames keep their source timestamps (variable frame rate
survives), shifted so the clip starts at 0.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable

import numpy as np

from curate.config import TranscodeConfig


def output_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    """(h, w) of the encoded clip: display size, scaled down to max_height if set, even dimensions."""
    h, w = height, width
    if max_height and h > max_height:
        w = width * max_height / height
        h = max_height
    h = max(2, int(round(h)) // 2 * 2)
    w = max(2, int(round(w)) // 2 * 2)
    return h, w


def ffmpeg_exe() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - optional program
        return None


@functools.lru_cache(maxsize=1)
def nvenc_available() -> bool:
    """True when an ffmpeg program with h264_nvenc is present and can open a GPU encoder."""
    exe = ffmpeg_exe()
    if not exe:
        return False
    try:
        probe = subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                                "color=size=256x256:duration=0.1", "-c:v", "h264_nvenc", "-f", "null", "-"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def encode_libx264(frames: Iterable[tuple[float, np.ndarray]], out_path: str, size: tuple[int, int],
                   fps: float, cfg: TranscodeConfig) -> int:
    """Encode (time_s, RGB frame) pairs through the project's H.264 writer; returns frames written."""
    from dataload.h264 import encode_h264

    h, w = size

    def checked():
        for t, arr in frames:
            if arr.shape[0] != h or arr.shape[1] != w:
                raise ValueError(f"frame size {arr.shape[1]}x{arr.shape[0]} differs from {w}x{h}")
            yield t, arr

    return len(encode_h264(checked(), out_path, fps=fps, crf=cfg.crf, preset=cfg.preset, threads=cfg.threads))


def encode_nvenc(frames: Iterable[tuple[float, np.ndarray]], out_path: str, size: tuple[int, int],
                 fps: float, cfg: TranscodeConfig) -> int:
    """Pipe raw RGB frames to `ffmpeg -c:v h264_nvenc` (driven with ffmpeg-python). Constant frame rate."""
    import ffmpeg

    h, w = size
    proc = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps or 25)
        .output(out_path, vcodec="h264_nvenc", pix_fmt="yuv420p", cq=cfg.crf, format="mp4")
        .global_args("-hide_banner", "-loglevel", "error")
        .overwrite_output()
        .run_async(cmd=ffmpeg_exe() or "ffmpeg", pipe_stdin=True, pipe_stderr=True)
    )
    n = 0
    try:
        for _, arr in frames:
            proc.stdin.write(np.ascontiguousarray(arr).tobytes())
            n += 1
    finally:
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"ffmpeg h264_nvenc failed: {' '.join(err.split())[:200]}")
    return n


def encode(frames, out_path: str, size, fps: float, cfg: TranscodeConfig) -> int:
    """Encode atomically: a temporary name, renamed once complete."""
    tmp = out_path + ".part.mp4"
    try:
        fn = encode_nvenc if cfg.encoder == "nvenc" else encode_libx264
        n = fn(frames, tmp, size, fps, cfg)
        os.replace(tmp, out_path)
        return n
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
