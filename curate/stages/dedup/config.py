"""Config section `models.dedup`: near-duplicate removal at the barrier (off by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from curate.typed_config import Range


@dataclass
class DedupConfig:
    enabled: bool = False
    hash_frames: Annotated[int, Range(1, 64)] = 3  # frames per clip hashed (at 1/4, 1/2, 3/4 of the clip for 3)
    # mean Hamming distance (of 64 bits per frame) that still counts as a re-upload
    hash_max_distance: Annotated[int, Range(0, 64)] = 8
    semantic: bool = True  # also compare `embedding`s (needs models.embedding.enabled)
    cosine_threshold: Annotated[float, Range(-1, 1)] = 0.95  # embeddings at least this similar are near-duplicates
    clusters: Annotated[int, Range(0, 1_000_000)] = 0  # k-means clusters; 0 = about sqrt(clips / 2)
    kmeans_iters: Annotated[int, Range(1, 10_000)] = 25
    seed: Annotated[int, Range(0, 2**32 - 1)] = 0
