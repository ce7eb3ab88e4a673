"""The all-pairs version of dedup's greedy rule: each clip, in rank order, is compared with every clip kept
before it (hashes and embeddings alike, no clusters). Quadratic, so not used by runs: it is what the
scalable `find_duplicates` is tested and benchmarked against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.stages.dedup.algorithm import DedupItem, _ranked, embedding_matrix, hash_matrix
from curate.stages.dedup.config import DedupConfig


def find_duplicates_all_pairs(items: Sequence[DedupItem], cfg: DedupConfig, block: int = 1024) -> dict[str, str]:
    ranked = _ranked(items)
    n = len(ranked)
    hashes, has_hash = hash_matrix(ranked)
    emb = embedding_matrix(ranked, cfg)
    kept = np.zeros(n, dtype=bool)
    dup: dict[str, str] = {}
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = emb[start:stop] @ emb[:stop].T if emb is not None else None  # every pair, a block of rows at a time
        for i in range(start, stop):
            match = None
            if hashes is not None and has_hash[i]:
                dist = np.bitwise_count(np.bitwise_xor(hashes[:i], hashes[i])).sum(axis=1) / hashes.shape[1]
                hit = np.flatnonzero((dist <= cfg.hash_max_distance) & kept[:i] & has_hash[:i])
                if len(hit):
                    match = int(hit[0])
            if sims is not None:
                hit = np.flatnonzero((sims[i - start, :i] >= cfg.cosine_threshold) & kept[:i])
                if len(hit) and (match is None or int(hit[0]) < match):
                    match = int(hit[0])
            if match is None:
                kept[i] = True
            else:
                dup[ranked[i].clip_id] = ranked[match].clip_id
    return dup
