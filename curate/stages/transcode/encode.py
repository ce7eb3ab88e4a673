"""Encoding one clip: its output size, and a writer per clip fed frame by frame (a `ClipSink` of the shared
decoding pass, curate.common.clip_pass).

libx264 goes through dataload.h264, whose pinned options make the same frames give the same bytes on every
machine and executor (clip bytes are part of the resume contract). Frames keep their source timestamps
(variable frame rate survives), shifted so the clip starts at 0. NVENC pipes raw RGB to the ffmpeg program
(driven with ffmpeg-python) at a constant frame rate.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import numpy as np

from curate.common.clip_pass import Views
from curate.stages.transcode.config import TranscodeConfig
from curate.state import THUMB_HEIGHT, thumbnail_name
from curate.task import Clip
from dataload.backends.pyav_reads import Decoded
from dataload.files import atomic_path
from dataload.h264 import H264Writer


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


class NvencWriter:
    """Raw RGB frames piped to `ffmpeg -c:v h264_nvenc`, written under a temporary name."""

    def __init__(self, path: str, size: tuple[int, int], fps: float, cfg: TranscodeConfig) -> None:
        import ffmpeg

        h, w = size
        self._target = atomic_path(path)
        tmp = self._target.__enter__()
        self._proc = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps or 25)
            .output(str(tmp), vcodec="h264_nvenc", pix_fmt="yuv420p", cq=cfg.crf, format="mp4")
            .global_args("-hide_banner", "-loglevel", "error")
            .overwrite_output()
            .run_async(cmd=ffmpeg_exe() or "ffmpeg", pipe_stdin=True, pipe_stderr=True)
        )

    def write(self, t: float, arr: np.ndarray) -> None:
        self._proc.stdin.write(np.ascontiguousarray(arr).tobytes())

    def close(self) -> None:
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        if self._proc.wait() != 0:
            exc = RuntimeError(f"ffmpeg h264_nvenc failed: {' '.join(err.split())[:200]}")
            self._target.__exit__(RuntimeError, exc, None)
            raise exc
        self._target.__exit__(None, None, None)

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._target.__exit__(RuntimeError, RuntimeError("aborted"), None)


class EncodeSink:
    """Encodes one clip from the frames of a decoding pass into `<work_dir>/<clip_id>.mp4`; `finish` checks
    that the clip got exactly its frames and names the file in `clip.media`."""

    def __init__(self, clip: Clip, work_dir: str, size: tuple[int, int], cfg: TranscodeConfig) -> None:
        self.clip, self.size, self.cfg = clip, size, cfg
        self.name = f"{clip.clip_id}.mp4"
        self.path = os.path.join(work_dir, self.name)
        self.frames = 0
        self._writer: H264Writer | NvencWriter | None = None
        self._thumb: np.ndarray | None = None

    def feed(self, d: Decoded, views: Views) -> None:
        arr = views(d, self.size, False)
        if self._writer is None:
            if self.cfg.encoder == "nvenc":
                self._writer = NvencWriter(self.path, self.size, self.clip.fps, self.cfg)
            else:
                self._writer = H264Writer(self.path, fps=self.clip.fps, crf=self.cfg.crf, preset=self.cfg.preset,
                                          threads=self.cfg.threads)
        self._writer.write(float(d.time_s) - self.clip.start_s, arr)
        if self.frames == self.clip.num_frames // 2:  # the report's thumbnail, from the frame at hand
            import cv2

            h, w = arr.shape[:2]
            size = (max(1, round(w * THUMB_HEIGHT / max(h, 1))), THUMB_HEIGHT)
            self._thumb = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
        self.frames += 1

    def finish(self) -> None:
        if self.frames != self.clip.num_frames:
            self.abort()
            raise RuntimeError(f"clip {self.clip.clip_id}: decoded {self.frames} of its {self.clip.num_frames} "
                               "frames")
        assert self._writer is not None
        writer, self._writer = self._writer, None
        writer.close()
        self.clip.media = self.name
        if self._thumb is not None:
            import cv2

            ok, png = cv2.imencode(".png", np.ascontiguousarray(self._thumb[..., ::-1]))  # OpenCV writes BGR
            try:
                if ok:
                    with open(os.path.join(os.path.dirname(self.path), thumbnail_name(self.clip.clip_id)), "wb") as f:
                        f.write(png.tobytes())
            except OSError:  # the report decodes the clip instead
                pass

    def abort(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.abort()


class ClipEncoder:
    """Makes the encode sinks of a task's clips (at the task's output size)."""

    def __init__(self, config: TranscodeConfig) -> None:
        self.config = config

    def size(self, width: int, height: int) -> tuple[int, int]:
        return output_size(width, height, self.config.max_height)

    def sink(self, clip: Clip, work_dir: str, width: int, height: int) -> EncodeSink:
        os.makedirs(work_dir, exist_ok=True)
        return EncodeSink(clip, work_dir, self.size(width, height), self.config)
