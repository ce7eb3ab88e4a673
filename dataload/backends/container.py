"""Opening a video with PyAV: the regular-file check, FFmpeg's errors as one line, the choice of stream,
the streams' facts and a picture's rotation. Shared by every decoding path (probe, reader, splitter)."""

from __future__ import annotations

import os

import av

from dataload.errors import VideoError
from dataload.files import NotRegularFileError, regular_file_size
from dataload.video_info import StreamInfo


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
        reason = ffmpeg_message(exc)
        raise VideoError(f"{path}: not a readable video ({reason})") from None


def ffmpeg_message(exc: BaseException) -> str:
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


def rotation_of(frame: av.VideoFrame) -> int:
    """Clockwise degrees that turn the decoded picture upright (FFmpeg's display matrix is counter-clockwise)."""
    try:
        angle = frame.rotation
    except Exception:  # noqa: BLE001 - no side data or an unreadable matrix means upright
        return 0
    return int(round(-float(angle) / 90.0)) % 4 * 90
