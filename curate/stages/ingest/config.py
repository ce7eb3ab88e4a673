"""Config section `ingest`: which files in a folder or glob are videos or images, and which files beside
them are their captions (timed text beside a video, plain text beside an image)."""

from __future__ import annotations

from dataclasses import dataclass, field

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                    ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m")
CAPTION_EXTENSIONS = (".srt", ".vtt")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IMAGE_CAPTION_EXTENSIONS = (".txt",)


@dataclass
class IngestConfig:
    video_extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    caption_extensions: list[str] = field(default_factory=lambda: list(CAPTION_EXTENSIONS))
    # images are curated as one-frame clips; their caption is the whole text file beside them
    image_extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    image_caption_extensions: list[str] = field(default_factory=lambda: list(IMAGE_CAPTION_EXTENSIONS))

    @property
    def media_extensions(self) -> list[str]:
        return [*self.video_extensions, *self.image_extensions]
