"""Timed text (.srt and .vtt) parsing, and the cue text that overlaps a clip's span."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})")
_ARROW = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)")
_TAGS = re.compile(r"<[^>]*>|\{\\[^}]*\}")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _seconds(stamp: str) -> float:
    m = _TIME.fullmatch(stamp.strip())
    if not m:
        raise ValueError(f"bad timestamp {stamp!r}")
    h, mnt, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def parse_timed_text(text: str) -> list[Cue]:
    """Cues of an SRT or WebVTT document, in time order. Styling tags are dropped, lines joined by a space;
    malformed blocks are skipped (subtitle files in the wild are messy)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        for i, line in enumerate(lines):
            m = _ARROW.match(line)
            if not m:
                continue
            try:
                start, end = _seconds(m.group(1)), _seconds(m.group(2))
            except ValueError:
                break
            body = " ".join(_TAGS.sub("", ln).strip() for ln in lines[i + 1:])
            body = " ".join(body.split())
            if body and end > start:
                cues.append(Cue(start, end, body))
            break
    cues.sort(key=lambda c: (c.start_s, c.end_s))
    return cues


def overlapping(cues: list[Cue], start_s: float, end_s: float) -> list[dict]:
    """Cues overlapping [start_s, end_s), as windows relative to the clip and clipped to it."""
    dur = end_s - start_s
    out = []
    for c in cues:
        if c.end_s > start_s and c.start_s < end_s:
            out.append({"start_s": round(max(0.0, c.start_s - start_s), 6),
                        "end_s": round(min(dur, c.end_s - start_s), 6), "text": c.text})
    return out
