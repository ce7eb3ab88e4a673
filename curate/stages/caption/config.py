"""Config section `captions`: captions from timed text beside the video."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CaptionConfig:
    timed_text: bool = True  # captions from an .srt/.vtt beside the video
    joiner: str = " "  # between the texts of the cues of one clip
