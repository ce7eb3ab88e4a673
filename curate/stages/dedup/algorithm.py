"""Near-duplicate removal across a whole run (within a video and across videos), a barrier step.

Two signals, both deterministic:
- perceptual hashes (DCT pHash, 64 bits) of a few frames at fixed relative positions of each clip catch
  re-uploads: the same footage re-encoded at another size or bitrate hashes within a few bits;
- clip embeddings (``embedding``, L2-normalised) catch semantic near-duplicates: k-means fitted on a sample
  splits the clips into clusters, then clips are compared pairwise (cosine) only within their cluster
  (`semantic.py`).
Hashes are never compared all against all: bands of sampled bits propose candidate pairs (`lsh.py`).

Which clip of a group is kept: clips are ranked by resolution (width x height, higher first), then clip id;
in that order each clip is kept unless it matches an already kept clip, and then it is rejected as
``duplicate_of:<the best-ranked kept clip it matches>``. The same inputs always keep the same clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curate.stages.dedup.config import DedupConfig
from curate.stages.dedup.lsh import near_groups
from curate.stages.dedup.semantic import cluster_labels, kmeans, similar_pairs

__all__ = ["DedupItem", "find_duplicates", "hamming", "kmeans", "phash", "relative_positions"]


def phash(frame: np.ndarray) -> int:
    """64-bit perceptual hash of an RGB or luma frame: sign of the 8x8 lowest DCT frequencies of a 32x32
    luma thumbnail against their median (the DC term left out: it only carries brightness)."""
    import cv2

    img = np.asarray(frame)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(img.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    ac = low[1:]
    bits = np.concatenate([[False], ac > np.median(ac)])
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance of uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(a.astype(np.uint64), b.astype(np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


@dataclass
class DedupItem:
    clip_id: str
    pixels: int  # width x height: the higher resolution copy is kept
    hashes: np.ndarray | None = None  # uint64, one per sampled frame (same count for every item)
    embedding: np.ndarray | None = None  # L2-normalised


def _ranked(items: Sequence[DedupItem]) -> list[DedupItem]:
    return sorted(items, key=lambda it: (-it.pixels, it.clip_id))


def hash_matrix(ranked: Sequence[DedupItem]) -> tuple[np.ndarray | None, np.ndarray]:
    """``(hashes, has_hash)``: one row per item (as many frames as the item with the fewest), and which
    items have hashes at all (an unreadable clip has none and is compared by embedding only)."""
    has_hash = np.array([it.hashes is not None and len(it.hashes) > 0 for it in ranked], dtype=bool)
    if not has_hash.any():
        return None, has_hash
    width = min(len(it.hashes) for it, ok in zip(ranked, has_hash) if ok)
    hashes = np.zeros((len(ranked), width), dtype=np.uint64)
    for i, it in enumerate(ranked):
        if has_hash[i]:
            hashes[i] = np.asarray(it.hashes[:width], dtype=np.uint64)
    return hashes, has_hash


def embedding_matrix(ranked: Sequence[DedupItem], cfg: DedupConfig) -> np.ndarray | None:
    """Normalised embeddings (n, d) when semantic dedup is on and every item has one, else None."""
    if not cfg.semantic or not all(it.embedding is not None for it in ranked):
        return None
    emb = np.stack([np.asarray(it.embedding, dtype=np.float64) for it in ranked])
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def find_duplicates(items: Sequence[DedupItem], cfg: DedupConfig) -> dict[str, str]:
    """``{rejected clip_id: kept clip_id}`` for every duplicate among ``items``.

    The verdicts are those of the greedy rule in the module docstring, taken over candidate pairs found
    without an all-pairs step (hash bands, `lsh.py`; embedding clusters fitted on a sample, `semantic.py`);
    `reference.py` holds the all-pairs version they are tested against."""
    ranked = _ranked(items)
    n = len(ranked)
    if n < 2:
        return {}
    # hashes: near pairs between groups of equal hashes (rows in rank order)
    hashes, has_hash = hash_matrix(ranked)
    group = np.full(n, -1, dtype=np.int64)
    group_nbrs: dict[int, list[int]] = {}
    if hashes is not None:
        rows = np.flatnonzero(has_hash)
        g, ga, gb = near_groups(hashes[rows], cfg.hash_max_distance, recall=cfg.lsh_recall,
                                band_bits=cfg.lsh_band_bits, bands=cfg.lsh_bands, seed=cfg.seed)
        group[rows] = g
        for a, b in zip(ga.tolist(), gb.tolist()):
            group_nbrs.setdefault(a, []).append(b)
            group_nbrs.setdefault(b, []).append(a)
    # embeddings: near pairs within clusters fitted on a sample
    emb_nbrs: dict[int, list[int]] = {}
    emb = embedding_matrix(ranked, cfg)
    if emb is not None:
        by_id = np.array(sorted(range(n), key=lambda i: ranked[i].clip_id), dtype=np.int64)
        labels = cluster_labels(emb, by_id, clusters=cfg.clusters, sample=cfg.kmeans_sample,
                                iters=cfg.kmeans_iters, seed=cfg.seed, probes=cfg.probes)
        ea, eb = similar_pairs(emb, labels, cfg.cosine_threshold)
        for a, b in zip(ea.tolist(), eb.tolist()):
            emb_nbrs.setdefault(b, []).append(a)
    # greedy in rank order, only over the items that have a neighbour at all
    group_size = np.bincount(group[group >= 0]) if (group >= 0).any() else np.zeros(0, dtype=np.int64)
    involved = set(emb_nbrs)
    for i in np.flatnonzero(group >= 0).tolist():
        gi = int(group[i])
        if group_size[gi] > 1 or gi in group_nbrs:
            involved.add(i)
    kept = np.ones(n, dtype=bool)
    kept_of_group: dict[int, int] = {}  # a group's one kept row (its rows are all near each other)
    dup: dict[str, str] = {}
    for i in sorted(involved):
        cands = []
        gi = int(group[i])
        if gi >= 0:
            for gg in [gi, *group_nbrs.get(gi, ())]:
                k = kept_of_group.get(gg)
                if k is not None and k < i:
                    cands.append(k)
        cands += [j for j in emb_nbrs.get(i, ()) if kept[j]]
        if cands:
            kept[i] = False
            dup[ranked[i].clip_id] = ranked[min(cands)].clip_id
        elif gi >= 0:
            kept_of_group.setdefault(gi, i)
    return dup


def relative_positions(count: int) -> list[float]:
    """Where in a clip (0..1) the hashed frames sit: evenly inside, away from the ends (fades, trims)."""
    return [(j + 1) / (count + 1) for j in range(count)]

