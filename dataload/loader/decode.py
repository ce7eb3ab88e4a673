"""Decode a clip held in memory to a (T, C, H, W) uint8 tensor at a bucket's shape.

Frames are chosen by nearest timestamp at the target fps (stream timestamps, so variable frame rate is
handled), the window placed by a given fraction (random start) or centred. Only chosen frames are
converted to RGB, scaled by swscale straight to a size that covers the bucket in display geometry
(pixel aspect and rotation applied, as the reader does), then centre-cropped.
PyAV from a BytesIO: shard members are bytes in memory, and the reader in dataload opens paths.

Shard bytes come from outside, so any input ends either in a tensor or in a VideoError for that clip:
garbage, no video stream, zero frames, absurd timing, and frames over `max_pixels` (the stream's declared
size is checked before decoding, FFmpeg's own `max_pixels` refuses bigger frames mid-stream, and the
scaled output is checked before it is allocated), so a hostile header cannot make us allocate gigabytes.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from dataload.backends.pyav import choose_stream, rotation_of
from dataload.errors import CorruptVideoError, VideoError
from dataload.loader.config import Bucket
from dataload.video_info import display_size


def choose_frames(pts: list[int], time_base: float, num_frames: int, fps: float | None,
                  start_fraction: float) -> list[int]:
    """Indices into `pts` of the frames to output (repeats allowed when the clip is shorter than asked)."""
    n = len(pts)
    if fps is None:
        first = int(round(start_fraction * max(n - num_frames, 0)))
        return [min(first + i, n - 1) for i in range(num_frames)]
    times = [(p - pts[0]) * time_base for p in pts]
    span = (num_frames - 1) / fps
    t0 = start_fraction * max(times[-1] - span, 0.0)
    out = []
    j = 0
    for i in range(num_frames):
        t = t0 + i / fps
        while j + 1 < n and abs(times[j + 1] - t) <= abs(times[j] - t):
            j += 1
        out.append(j)
    return out


def _cover_size(w: int, h: int, bucket: Bucket) -> tuple[int, int]:
    s = max(bucket.width / w, bucket.height / h)
    return max(bucket.width, math.ceil(w * s - 1e-6)), max(bucket.height, math.ceil(h * s - 1e-6))


DEFAULT_MAX_PIXELS = 1 << 25  # 8K UHD fits


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def decode_clip(data: bytes, bucket: Bucket, fps: float | None, start_fraction: float,
                threads: int = 1, reformatter: VideoReformatter | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """(T, C, H, W) uint8; VideoError (one line) for anything that is not a decodable clip within
    `max_pixels` per frame. Pass one `reformatter` for many clips: it keeps its swscale context while
    the sizes stay the same (`frame.to_ndarray(width=..)` builds a new one per frame, several times
    slower on small frames)."""
    try:
        return _decode_clip(data, bucket, fps, start_fraction, threads, reformatter, max_pixels)
    except VideoError:
        raise
    except av.FFmpegError as e:
        raise VideoError(f"not a readable video ({e.__class__.__name__}: {_one_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - hostile bytes reach PyAV/numpy in ways no list foresees
        raise VideoError(f"cannot decode the clip ({e.__class__.__name__}: {_one_line(e)})") from None


def _decode_clip(data: bytes, bucket: Bucket, fps: float | None, start_fraction: float, threads: int,
                 reformatter: VideoReformatter | None, max_pixels: int) -> torch.Tensor:
    sws = reformatter if reformatter is not None else VideoReformatter()
    if not data:
        raise VideoError("empty video member")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"not a readable video ({e.__class__.__name__}: {_one_line(e)})") from None
    with container:
        stream = choose_stream(container, "clip", None)  # the reader's rule: most pixels, default, rate
        cc = stream.codec_context
        declared = (cc.width or 0) * (cc.height or 0)
        if declared > max_pixels:
            raise VideoError(f"frames of {cc.width}x{cc.height} are over max_frame_pixels {max_pixels}")
        tb = stream.time_base
        if not tb or tb <= 0:
            raise VideoError("the video stream has no usable time base")
        cc.options = {**dict(cc.options or {}), "max_pixels": str(max_pixels)}  # FFmpeg refuses bigger frames
        stream.thread_type = "AUTO"
        if threads > 0:
            stream.thread_count = threads
        # One demux pass: the packets' timestamps choose the frames, then the same packets are decoded
        # (no second read of the container).
        try:
            packets = [p for p in container.demux(stream) if p.size > 0]
        except av.FFmpegError as e:
            raise CorruptVideoError(f"cannot demux: {e}") from None
        pts = sorted(p.pts for p in packets if p.pts is not None)
        if not pts:
            raise VideoError("no frames")
        idx = choose_frames(pts, float(tb), bucket.num_frames, fps, start_fraction)
        wanted: dict[int, list[int]] = {}
        for out_i, j in enumerate(idx):
            wanted.setdefault(pts[j], []).append(out_i)
        frames: list[np.ndarray | None] = [None] * len(idx)
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio or Fraction(1)
        geom: tuple[int, int, int] | None = None  # scale width, scale height (coded orientation), rot90 k

        def take(frame) -> None:
            nonlocal geom
            outs = wanted.pop(frame.pts, None)
            if outs is None:
                return
            if frame.width * frame.height > max_pixels:
                raise VideoError(f"a frame of {frame.width}x{frame.height} is over max_frame_pixels {max_pixels}")
            if geom is None:
                # Cover the bucket in display geometry (pixel aspect and rotation applied, DESIGN.md 2);
                # swscale works in the coded orientation, the quarter turns come after.
                rot = rotation_of(frame)
                cw, ch = _cover_size(*display_size(frame.width, frame.height, sar, rot), bucket)
                if cw * ch > max_pixels:  # an absurd pixel aspect would scale to a giant picture
                    raise VideoError(f"pixel aspect {sar} scales the clip to {cw}x{ch}, over max_frame_pixels "
                                     f"{max_pixels}")
                geom = (ch, cw, -(rot // 90)) if rot in (90, 270) else (cw, ch, -(rot // 90))
            arr = sws.reformat(frame, width=geom[0], height=geom[1], format="rgb24").to_ndarray()
            if geom[2] % 4:
                arr = np.ascontiguousarray(np.rot90(arr, geom[2]))
            for o in outs:
                frames[o] = arr

        for packet in packets + [None]:  # None flushes the decoder
            try:
                for frame in stream.decode(packet):
                    take(frame)
            except av.FFmpegError:
                continue  # tolerant: a corrupt packet loses its frame, the rest still decode
            if not wanted:
                break
        # Frames lost to corruption take their nearest decoded neighbour.
        got = [i for i, f in enumerate(frames) if f is not None]
        if not got:
            raise CorruptVideoError("no frame could be decoded")
        if len(got) < len(frames):
            for i in range(len(frames)):
                if frames[i] is None:
                    frames[i] = frames[min(got, key=lambda g: abs(g - i))]
    # One copy: each frame's centre crop goes straight into a contiguous (T, C, H, W) array, so batching
    # later is a plain memcpy rather than a strided transpose.
    h0, w0 = frames[0].shape[:2]  # type: ignore[union-attr]
    y0 = (h0 - bucket.height) // 2
    x0 = (w0 - bucket.width) // 2
    video = np.empty((len(frames), 3, bucket.height, bucket.width), dtype=np.uint8)
    for t, f in enumerate(frames):
        video[t] = f[y0:y0 + bucket.height, x0:x0 + bucket.width].transpose(2, 0, 1)  # type: ignore[index]
    return torch.from_numpy(video)
