"""One decoding pass over a source's clips, shared by whatever needs their frames.

The filters need a few small luma frames of each clip, the transcoder every frame of it in RGB: both are
fed from the same decoded pictures (`ClipSink.feed` gets each picture of its clip, unconverted, and makes
its own views through the pass's converters), so a clip is decoded once however many stages look at it.
The pass runs from the first clip's first frame to the last clip's end, in frame order; clips do not
overlap (they are pieces of scenes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from curate.task import Clip
from dataload.backends.frame_convert import FrameConverter
from dataload.backends.pyav_reads import Decoded
from dataload.reader import VideoReader


class Views:
    """The converters of one pass, one per (size, luma): each is built once, on first use."""

    def __init__(self, reader: VideoReader) -> None:
        self.reader = reader
        self._conv: dict[tuple[tuple[int, int] | None, bool], FrameConverter] = {}

    def __call__(self, d: Decoded, size: tuple[int, int] | None, luma: bool):
        key = (size, luma)
        conv = self._conv.get(key)
        if conv is None:
            conv = self._conv[key] = self.reader.converter(size, luma)
        return conv(d.frame)


class ClipSink(Protocol):
    """Takes the frames of one clip: `feed` each picture in order, then `finish` (or `abort` on an error)."""

    def feed(self, d: Decoded, views: Views) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


def decode_clips(reader: VideoReader, jobs: Sequence[tuple[Clip, Sequence[ClipSink]]]) -> None:
    """Feed each clip's sinks the pictures [start_frame, end_frame) of it, in one pass; every sink is
    finished (or, when something raises, aborted)."""
    order = sorted((j for j in jobs if j[1]), key=lambda j: j[0].start_frame)
    if not order:
        return
    views = Views(reader)
    pending = [list(sinks) for _, sinks in order]
    k = 0
    try:
        start = max(0.0, order[0][0].start_s - 1e-6)
        for d in reader.decoded(start_s=start, end_s=order[-1][0].end_s):
            while k < len(order) and d.index >= order[k][0].end_frame:
                _finish(pending[k])
                k += 1
            if k == len(order):
                break
            if d.index >= order[k][0].start_frame:
                for sink in pending[k]:
                    sink.feed(d, views)
        while k < len(order):  # the video ended (or a clip was cut short): the sinks check their counts
            _finish(pending[k])
            k += 1
    except BaseException:
        for sinks in pending[k:]:
            for sink in sinks:
                sink.abort()
        raise


def _finish(sinks: list[ClipSink]) -> None:
    while sinks:
        sink = sinks[0]
        sink.finish()
        sinks.pop(0)  # finished: no abort for it if a later sink raises
