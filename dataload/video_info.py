"""What a video is: its container, streams and the facts of the stream we decode (see DESIGN.md section 2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str  # "video", "audio", "subtitle", "data", ...
    codec: str | None
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # nominal rate from the header (video only)
    num_frames: int | None = None  # from the header; 0/None when the container does not say
    language: str | None = None
    default: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    container: str
    codec: str
    width: int  # display: rotation and pixel aspect applied
    height: int
    coded_width: int  # as decoded, before rotation and pixel aspect
    coded_height: int
    sample_aspect_ratio: str  # "128:117", "1:1"
    rotation: int  # clockwise degrees to turn a decoded picture for display: 0/90/180/270
    fps: float  # average: decoded frames over the time they span
    nominal_fps: float | None  # what the header claims
    num_frames: int  # decoded (counted, the header may lie)
    duration_s: float  # first frame's time to the end of the last frame
    variable_frame_rate: bool
    decode_errors: int
    stream_index: int
    streams: list[StreamInfo] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["streams"] = [s.to_dict() for s in self.streams]
        return d


def display_size(coded_width: int, coded_height: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    """(width, height) for display: coded width x SAR rounded to the nearest even number, then rotated."""
    width = coded_width
    if sar > 0 and sar != 1:
        # nearest even: round(w * sar / 2) * 2; Fraction keeps it exact, ties go up like ffmpeg's rounding
        width = int((Fraction(coded_width) * sar / 2 + Fraction(1, 2)) // 1) * 2
        width = max(width, 2)
    height = coded_height
    if rotation in (90, 270):
        width, height = height, width
    return width, height


def format_sar(sar: Fraction) -> str:
    if sar <= 0:
        return "1:1"
    return f"{sar.numerator}:{sar.denominator}"
