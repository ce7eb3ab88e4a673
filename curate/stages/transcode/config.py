"""Config section `transcode`: how kept clips are encoded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from curate.typed_config import Range

Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                 "placebo"]


@dataclass
class TranscodeConfig:
    encoder: Literal["libx264", "nvenc"] = "libx264"  # nvenc: ffmpeg's h264_nvenc, only when present
    crf: Annotated[int, Range(0, 51)] = 20
    preset: Preset = "veryfast"
    threads: Annotated[int, Range(1, 64)] = 1  # pinned: the same bytes on every machine and executor
    # downscale taller clips (aspect kept, even dimensions); None keeps the size
    max_height: Annotated[int, Range(16, 1 << 16)] | None = None
