"""Detect the scenes of a video with one configured splitter: content (small luma, numpy), TransNetV2 (the
package's weights) or a fixed stride."""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from curate.common.cuda import cuda_present
from curate.stages.split.config import SplitConfig
from curate.stages.split.frames import decode_small
from curate.stages.split.result import SceneResult, scenes_from_cuts
from curate.task import AnalysisFrames


def resolve_splitter(name: str) -> str:
    """`auto` is `content` on a CPU-only machine and `transnetv2` when CUDA is present."""
    if name != "auto":
        return name
    return "transnetv2" if cuda_present() else "content"


class SceneDetector:
    """Detects scenes with one configured splitter; holds its model (TransNetV2) across videos,
    so a curation worker builds it once in setup()."""

    def __init__(self, config: SplitConfig | None = None) -> None:
        self.config = config or SplitConfig()
        self.config.check()
        self.splitter = resolve_splitter(self.config.splitter)
        self._transnet = None

    @property
    def analysis_width(self) -> int | None:
        """The width of the luma analysis track this splitter reads (None: TransNetV2 decodes its own)."""
        return None if self.splitter == "transnetv2" else self.config.analysis_width

    def __call__(self, path: str | os.PathLike) -> SceneResult:
        """Scenes of the video at `path` (decoded here)."""
        path = os.fspath(path)
        if self.splitter == "transnetv2":
            # exact decoding (deblocking on): the frames the package feeds its model
            small = decode_small(path, size=(27, 48), luma=False, skip_deblock=False)
            if self._transnet is None:
                from curate.stages.split.transnet import TransNetSplitter

                self._transnet = TransNetSplitter(self.config)
            cuts, transitions = self._transnet.detect(small.frames)
            # the network marks some brief flashes too: the same test as the content splitter's drops them
            from curate.stages.split.flashes import without_flashes

            cuts, transitions = without_flashes(small.frames, cuts, transitions, self.config)
            return self._result(small, cuts, transitions)
        return self.from_analysis(self._decode_luma(path))

    def _decode_luma(self, path: str, threads: int = 0) -> AnalysisFrames:
        # `fixed` needs only timestamps; the luma pass at analysis size is nearly as cheap
        return decode_small(path, size=(-1, self.config.analysis_width), luma=True, threads=threads)

    def detect_many(self, paths) -> Iterator[tuple[str, SceneResult | Exception]]:
        """(path, scenes or the exception that stopped it) of each video in order. The luma splitters
        work on several videos at once, one thread each (decode, then analysis), each decoding with
        one FFmpeg thread: whole videos side by side keep the cores busier than one video's frame
        threads beside the other's analysis (13-20% less wall time on the split benchmark's set, 2 cores).
        A single video decodes with FFmpeg's own threads."""
        paths = [os.fspath(p) for p in paths]
        workers = min(len(paths), os.cpu_count() or 1)
        if self.splitter == "transnetv2" or workers < 2:
            for path in paths:
                try:
                    yield path, self(path)
                except Exception as exc:  # noqa: BLE001 - the caller decides what is fatal
                    yield path, exc
            return
        from concurrent.futures import ThreadPoolExecutor

        def one(path: str) -> SceneResult:
            return self.from_analysis(self._decode_luma(path, threads=1))

        with ThreadPoolExecutor(workers, thread_name_prefix="scenes") as pool:
            ahead = [pool.submit(one, p) for p in paths[:workers]]
            if self.splitter == "content":
                from curate.stages.split import content  # noqa: F401 - imported while the first videos decode
            for i, path in enumerate(paths):
                if i + workers < len(paths):  # at most `workers` videos in memory, the next one queued
                    ahead.append(pool.submit(one, paths[i + workers]))
                try:
                    yield path, ahead[i].result()
                except Exception as exc:  # noqa: BLE001
                    yield path, exc
                ahead[i] = None

    def from_analysis(self, small: AnalysisFrames) -> SceneResult:
        """Scenes from a video's luma analysis track (content and fixed splitters)."""
        if self.splitter == "content":
            # imported on first use (OpenCV and the analysis modules): `detect_many` has the first video
            # decoding on its thread by then, so a fresh process imports while FFmpeg works
            from curate.stages.split import content

            cuts, transitions = content.detect(small.frames, self.config)
        else:
            cuts, transitions = fixed_cuts(small.times, self.config.fixed_stride_s), []
        return self._result(small, cuts, transitions)

    def _result(self, small: AnalysisFrames, cuts: list[int], transitions: list[tuple[int, int]]) -> SceneResult:
        n = len(small.times)
        return SceneResult(num_frames=n, fps=small.fps, cuts=cuts, transitions=transitions,
                           scenes=scenes_from_cuts(n, cuts, transitions), frame_times=small.times,
                           splitter=self.splitter, decode_errors=small.decode_errors)


def fixed_cuts(times: np.ndarray, stride_s: float) -> list[int]:
    """A cut at the first frame at or after every multiple of `stride_s` seconds."""
    if len(times) < 2:
        return []
    marks = np.arange(stride_s, float(times[-1]) + 1e-9, stride_s)
    cuts = np.searchsorted(times, marks - 1e-9)
    return sorted({int(c) for c in cuts if 0 < c < len(times)})
