"""Config section `ingest`: which files in a folder or glob are videos, and which files beside a video are
its timed text."""

from __future__ import annotations

from dataclasses import dataclass, field

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                    ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m")
CAPTION_EXTENSIONS = (".srt", ".vtt")


@dataclass
class IngestConfig:
    video_extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    caption_extensions: list[str] = field(default_factory=lambda: list(CAPTION_EXTENSIONS))
