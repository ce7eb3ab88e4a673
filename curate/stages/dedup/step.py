"""The dedup step at the barrier: every committed source's surviving clips, hashed from their transcoded
mp4s (the bytes that will be shipped) and compared with their embeddings; duplicates are rejected as
`duplicate_of:<the kept clip>`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from curate.common.frames import decode_at
from curate.stages.dedup.algorithm import DedupItem, find_duplicates, phash, relative_positions
from curate.stages.dedup.config import DedupConfig
from curate.task import Clip, SourceTask
from dataload.clip_record import DUPLICATE_PREFIX


class DedupStep:
    name = "dedup"

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.seconds = 0.0

    def _hashes(self, task: SourceTask, clip: Clip) -> np.ndarray | None:
        media = Path(task.work_dir or ".") / (clip.media or "")
        if not clip.media or not media.is_file():
            return None
        length = max(0.0, clip.end_s - clip.start_s)
        times = [p * length for p in relative_positions(self.cfg.hash_frames)]
        try:
            frames = decode_at(str(media), times, max_side=128)
        except Exception:  # noqa: BLE001 - an unreadable clip just goes without a hash
            return None
        return np.array([phash(f) for f in frames], dtype=np.uint64)

    def __call__(self, tasks: list[SourceTask]) -> None:
        t0 = time.perf_counter()
        pairs = [(t, c) for t in tasks for c in t.clips if c.active]
        items = []
        for task, clip in pairs:
            emb = np.asarray(clip.embedding, dtype=np.float64) if clip.embedding is not None else None
            items.append(DedupItem(clip.clip_id, int(clip.width) * int(clip.height), self._hashes(task, clip), emb))
        dups = find_duplicates(items, self.cfg)
        for _, clip in pairs:
            if clip.clip_id in dups:
                clip.reject(f"{DUPLICATE_PREFIX}{dups[clip.clip_id]}")
        self.seconds = time.perf_counter() - t0
