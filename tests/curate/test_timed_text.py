"""Captions from .srt/.vtt: parsing and the text overlapping each clip's span."""

from __future__ import annotations

from curate.stages.caption.config import CaptionConfig
from curate.stages.caption.stage import TimedTextCaptionStage
from curate.stages.caption.timed_text import overlapping, parse_timed_text
from curate.task import Clip, SourceTask

SRT = """1
00:00:00,000 --> 00:00:01,500
A red <i>car</i>

2
00:00:01,500 --> 00:00:04,000
drives up
a hill

bad block without times

3
00:00:06,250 --> 00:00:07,000
{\\an8}Night falls
"""

VTT = """WEBVTT

NOTE a comment

intro
00:00.500 --> 00:02.000 align:start
<v Anna>Hello there</v>

00:01:00.000 --> 00:01:01.000
one minute
"""


def test_parse_srt():
    cues = parse_timed_text(SRT)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [
        (0.0, 1.5, "A red car"), (1.5, 4.0, "drives up a hill"), (6.25, 7.0, "Night falls")]


def test_parse_vtt():
    cues = parse_timed_text(VTT)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [(0.5, 2.0, "Hello there"), (60.0, 61.0, "one minute")]


def test_overlap_windows_are_relative_and_clipped():
    cues = parse_timed_text(SRT)
    assert overlapping(cues, 1.0, 3.0) == [
        {"start_s": 0.0, "end_s": 0.5, "text": "A red car"},
        {"start_s": 0.5, "end_s": 2.0, "text": "drives up a hill"}]
    assert overlapping(cues, 4.0, 6.25) == []  # half-open: touching ends do not overlap


def test_caption_stage(tmp_path):
    srt = tmp_path / "v.srt"
    srt.write_text(SRT, encoding="utf-8")
    task = SourceTask(index=0, source="v.mp4", key="k", caption_path=str(srt))
    task.clips = [Clip("a", "v.mp4", 0.0, 2.0, 0, 50, 50, 25.0, 160, 96),
                  Clip("b", "v.mp4", 4.0, 6.0, 100, 150, 50, 25.0, 160, 96),
                  Clip("c", "v.mp4", 6.0, 8.0, 150, 200, 50, 25.0, 160, 96)]
    TimedTextCaptionStage(CaptionConfig()).process([task])
    a, b, c = task.clips
    assert a.caption == "A red car drives up a hill" and a.caption_model == "timed_text"
    assert len(a.caption_windows) == 2
    assert b.caption is None and b.caption_windows == [] and b.caption_model is None
    assert c.caption == "Night falls"
    assert c.caption_windows == [{"start_s": 0.25, "end_s": 1.0, "text": "Night falls"}]
