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
    probes: Annotated[int, Range(1, 64)] = 2  # clusters each clip is compared in (its nearest ones)
    kmeans_sample: Annotated[int, Range(0, 100_000_000)] = 20_000  # k-means is fitted on this many clips
    # (at least 16 per cluster; 0 = all), then every clip is assigned to its nearest centre
    # hash bands (LSH): a pair exactly at hash_max_distance is found with probability lsh_recall (closer
    # pairs more surely); 0 = automatic: band bits from the clip count, bands from the recall
    lsh_recall: Annotated[float, Range(0.5, 0.999999)] = 0.999
    lsh_band_bits: Annotated[int, Range(0, 4096)] = 0
    lsh_bands: Annotated[int, Range(0, 100_000)] = 0
    seed: Annotated[int, Range(0, 2**32 - 1)] = 0
