"""Near-duplicate removal across a whole run (within a video and across videos), a barrier step.

Two signals, both deterministic:
- perceptual hashes (DCT pHash, 64 bits) of a few frames at fixed relative positions of each clip catch
  re-uploads: the same footage re-encoded at another size or bitrate hashes within a few bits;
- clip embeddings (``embedding``, L2-normalised) catch semantic near-duplicates: k-means splits the clips
  into clusters, then clips are compared pairwise (cosine) only within their cluster, so the work grows
  with clusters x cluster size instead of clips squared.

Which clip of a group is kept: clips are ranked by resolution (width x height, higher first), then clip id;
in that order each clip is kept unless it matches an already kept clip, and then it is rejected as
``duplicate_of:<the best-ranked kept clip it matches>``. The same inputs always keep the same clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curate.stages.dedup.config import DedupConfig


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


def kmeans(x: np.ndarray, k: int, *, iters: int = 25, seed: int = 0) -> np.ndarray:
    """Cluster labels of the rows of ``x`` (cosine k-means on normalised rows, k-means++ init from a seeded
    generator): deterministic for the same rows in the same order."""
    n = len(x)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(n)]]
    for _ in range(1, k):
        d = np.clip(1.0 - np.max(x @ np.stack(centers).T, axis=1), 0.0, None)
        total = d.sum()
        centers.append(x[rng.choice(n, p=d / total)] if total > 0 else x[rng.integers(n)])
    c = np.stack(centers)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                m = members.sum(0)
                c[j] = m / (np.linalg.norm(m) or 1.0)
    return labels


@dataclass
class DedupItem:
    clip_id: str
    pixels: int  # width x height: the higher resolution copy is kept
    hashes: np.ndarray | None = None  # uint64, one per sampled frame (same count for every item)
    embedding: np.ndarray | None = None  # L2-normalised


def find_duplicates(items: Sequence[DedupItem], cfg: DedupConfig) -> dict[str, str]:
    """``{rejected clip_id: kept clip_id}`` for every duplicate among ``items``."""
    order = sorted(range(len(items)), key=lambda i: (-items[i].pixels, items[i].clip_id))
    ranked = [items[i] for i in order]
    n = len(ranked)
    if n < 2:
        return {}
    labels = np.zeros(n, dtype=np.int64)
    emb = None
    if cfg.semantic and all(it.embedding is not None for it in ranked):
        emb = np.stack([np.asarray(it.embedding, dtype=np.float64) for it in ranked])
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        k = cfg.clusters or max(1, round(math.sqrt(n / 2)))
        # clustered in clip-id order so the labels do not depend on the input order
        by_id = sorted(range(n), key=lambda i: ranked[i].clip_id)
        lab = kmeans(emb[by_id], k, iters=cfg.kmeans_iters, seed=cfg.seed)
        labels[by_id] = lab
    # Items without hashes (an unreadable clip) are compared by embedding only.
    has_hash = np.array([it.hashes is not None and len(it.hashes) > 0 for it in ranked])
    hashes = None
    if has_hash.any():
        width = min(len(it.hashes) for it, ok in zip(ranked, has_hash) if ok)
        hashes = np.zeros((n, width), dtype=np.uint64)
        for i, it in enumerate(ranked):
            if has_hash[i]:
                hashes[i] = np.asarray(it.hashes[:width], dtype=np.uint64)

    kept: list[int] = []
    kept_by_cluster: dict[int, list[int]] = {}
    dup: dict[str, str] = {}
    for i in range(n):
        match = None
        hashed_kept = [j for j in kept if has_hash[j]] if hashes is not None and has_hash[i] else []
        if hashed_kept:
            dist = hamming(hashes[hashed_kept], hashes[i][None, :]).mean(axis=1)
            hit = np.flatnonzero(dist <= cfg.hash_max_distance)
            if len(hit):
                match = hashed_kept[int(hit[0])]
        if emb is not None:
            peers = kept_by_cluster.get(int(labels[i]), [])
            if peers:
                sims = emb[peers] @ emb[i]
                hit = np.flatnonzero(sims >= cfg.cosine_threshold)
                if len(hit) and (match is None or peers[int(hit[0])] < match):
                    match = peers[int(hit[0])]
        if match is None:
            kept.append(i)
            kept_by_cluster.setdefault(int(labels[i]), []).append(i)
        else:
            dup[ranked[i].clip_id] = ranked[match].clip_id
    return dup


def relative_positions(count: int) -> list[float]:
    """Where in a clip (0..1) the hashed frames sit: evenly inside, away from the ends (fades, trims)."""
    return [(j + 1) / (count + 1) for j in range(count)]

