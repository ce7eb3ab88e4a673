"""Config section `probe`: the whole-video rules. A source outside them is `skipped` (not failed), with the
reason; one whose pictures are too large fails before any decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from curate.typed_config import Range

Side = Annotated[int, Range(0, 1 << 16)]


@dataclass
class ProbeConfig:
    min_duration_s: Annotated[float, Range(0)] = 0.5
    min_width: Side = 64
    min_height: Side = 64
    backend: Literal["pyav"] = "pyav"  # counting decoded frames and corrupt packets needs FFmpeg's decoder loop
    # A source whose pictures are larger than this fails before any decoding (a tiny file can declare
    # 30000x30000): 8192x8192 admits every real format up to 8K and bounds one RGB frame to 200 MB.
    max_pixels: Annotated[int, Range(1, 1 << 32)] = 8192 * 8192
