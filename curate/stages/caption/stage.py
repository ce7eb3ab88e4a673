"""The timed-text caption stage (and how a caption file is read: regular files and URLs, capped). Beside an
image the caption file is plain text (`ingest.image_caption_extensions`): its whole text, whitespace
collapsed, captions the image's one clip."""

from __future__ import annotations

import errno

from curate.stages.caption.config import CaptionConfig
from curate.stages.caption.timed_text import overlapping, parse_timed_text
from curate.step import PipelineStep, Resources
from curate.task import SourceTask
from dataload.files import FileTooLargeError, read_regular

CAPTION_MODEL = "timed_text"
TEXT_FILE_MODEL = "text_file"


MAX_CAPTION_BYTES = 16 << 20  # timed text of a feature film is well under 1 MB


def read_text(path: str, max_bytes: int = MAX_CAPTION_BYTES) -> str:
    """A caption file's text. A local one must be a regular file (never a FIFO or device) of at most
    `max_bytes`; a URL is read up to the same cap."""
    if "://" in path and not path.startswith("file://"):
        import fsspec

        with fsspec.open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise FileTooLargeError(errno.EFBIG, f"{path}: caption file is over the cap of {max_bytes} bytes")
    else:
        local = path[len("file://"):] if path.startswith("file://") else path
        raw = read_regular(local, "caption file", max_bytes)
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


class TimedTextCaptionStage(PipelineStep):
    name = "caption"
    resources = Resources(cpus=0.25)

    def __init__(self, config: CaptionConfig) -> None:
        self.config = config

    def process_task(self, task: SourceTask) -> None:
        if not self.config.timed_text or not task.caption_path or not task.clips:
            return
        if task.image:
            text = " ".join(read_text(task.caption_path).split())
            for clip in task.clips:
                if text:
                    clip.caption_windows = [{"start_s": 0.0, "end_s": clip.duration_s, "text": text}]
                    clip.caption, clip.caption_model = text, TEXT_FILE_MODEL
            return
        cues = parse_timed_text(read_text(task.caption_path))
        for clip in task.clips:
            windows = overlapping(cues, clip.start_s, clip.end_s)
            clip.caption_windows = windows
            texts: list[str] = []
            for w in windows:  # a cue repeated across windows is said once
                if not texts or texts[-1] != w["text"]:
                    texts.append(w["text"])
            if texts:
                clip.caption = self.config.joiner.join(texts)
                clip.caption_model = CAPTION_MODEL
