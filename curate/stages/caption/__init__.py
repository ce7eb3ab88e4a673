"""Captions from timed text (.srt/.vtt beside the video): each clip gets the text of the cues overlapping
its span, and the cues themselves as caption windows."""
