"""Captions from timed text: each clip gets the text of the .srt/.vtt cues overlapping its span."""

from __future__ import annotations

from curate.config import CaptionConfig
from curate.stage import Resources, SourceTask, Stage
from curate.timed_text import overlapping, parse_timed_text

CAPTION_MODEL = "timed_text"


def read_text(path: str) -> str:
    import fsspec

    with fsspec.open(path, "rb") as f:
        raw = f.read()
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


class TimedTextCaptionStage(Stage):
    name = "caption"
    resources = Resources(cpus=0.25)

    def __init__(self, config: CaptionConfig) -> None:
        self.config = config

    def process_task(self, task: SourceTask) -> None:
        if not self.config.timed_text or not task.caption_path or not task.clips:
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
