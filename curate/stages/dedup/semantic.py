"""Near-duplicate pairs of clip embeddings without comparing every pair: cosine k-means fitted on a sample,
every clip assigned to its nearest centre, and pairs compared exactly only within a cluster.

With k clusters of n clips, fitting costs sample x k per iteration, assigning n x k and comparing about
n^2 / k; k = sqrt(n / 2) by default, so the whole grows like n^1.5 instead of n^2 (see `python -m benchmarks
dedup`). Each clip is also compared with the members of its next nearest clusters (``probes``, 2 by default), so
near pairs on a cluster boundary are found too; a near pair whose clips share none of their probed
clusters is still missed: the price of the clusters (as in NeMo Curator's semantic dedup), measured by
`python -m benchmarks dedup` (planted_found).
"""

from __future__ import annotations

import math

import numpy as np


def kmeans_centers(x: np.ndarray, k: int, *, iters: int = 25, seed: int = 0) -> np.ndarray:
    """Centres (k, d) of cosine k-means on the normalised rows of ``x``: k-means++ from a seeded generator,
    then Lloyd iterations until the labels settle. Deterministic for the same rows in the same order."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    first = x[rng.integers(n)]
    centers = [first]
    gap = np.clip(1.0 - x @ first, 0.0, None)  # distance to the nearest chosen centre
    for _ in range(1, k):
        total = gap.sum()
        c = x[rng.choice(n, p=gap / total)] if total > 0 else x[rng.integers(n)]
        centers.append(c)
        gap = np.minimum(gap, np.clip(1.0 - x @ c, 0.0, None))
    c = np.stack(centers)
    labels = np.full(n, -1, dtype=np.int64)
    for it in range(iters):
        new = assign(x, c)
        if it and np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        norms = np.linalg.norm(sums, axis=1)
        filled = norms > 0  # an emptied cluster keeps its centre
        c[filled] = sums[filled] / norms[filled, None]
    return c


def assign(x: np.ndarray, centers: np.ndarray, chunk: int = 65536, probes: int = 1) -> np.ndarray:
    """Index of the nearest centre (highest cosine) of every row, in bounded-memory chunks; with
    ``probes`` > 1, the ``probes`` nearest centres, nearest first, as an (n, probes) array."""
    probes = max(1, min(probes, len(centers)))
    out = np.empty((len(x), probes), dtype=np.int64)
    for s in range(0, len(x), chunk):
        sims = x[s:s + chunk] @ centers.T
        for p in range(probes):
            best = np.argmax(sims, axis=1)
            out[s:s + chunk, p] = best
            sims[np.arange(len(sims)), best] = -np.inf
    return out[:, 0] if probes == 1 else out


def kmeans(x: np.ndarray, k: int, *, iters: int = 25, seed: int = 0) -> np.ndarray:
    """Cluster labels of the rows of ``x`` (cosine k-means on all of them)."""
    if max(1, min(k, len(x))) == 1:
        return np.zeros(len(x), dtype=np.int64)
    return assign(x, kmeans_centers(x, k, iters=iters, seed=seed))


def cluster_labels(emb: np.ndarray, order_key: np.ndarray, *, clusters: int, sample: int, iters: int,
                   seed: int, probes: int = 1) -> np.ndarray:
    """Labels of every row of ``emb`` ((n,), or (n, probes) nearest first) from k-means fitted on a seeded
    sample. ``order_key`` (a permutation of the rows, e.g. by clip id) fixes which rows are sampled, so
    labels do not depend on input order."""
    n = len(emb)
    k = clusters or max(1, round(math.sqrt(n / 2)))
    k = min(k, n)
    if k <= 1:
        zeros = np.zeros(n, dtype=np.int64)
        return zeros if probes <= 1 else zeros[:, None]
    size = n if sample <= 0 else min(n, max(sample, 16 * k))
    ordered = emb[order_key]
    if size < n:
        picked = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
        fit_on = ordered[picked]
    else:
        fit_on = ordered
    return assign(emb, kmeans_centers(fit_on, k, iters=iters, seed=seed), probes=probes)


def similar_pairs(emb: np.ndarray, labels: np.ndarray, threshold: float,
                  block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, whose cosine similarity is at least ``threshold`` (rows of ``emb``
    normalised), compared within clusters: ``labels`` (n,) is each row's cluster, or (n, probes) its
    nearest clusters, nearest first; a row is a member of its nearest one and is also compared with the
    members of the others (multi-probe: near pairs on a cluster boundary are found too)."""
    labels = labels.reshape(len(labels), -1)
    member_of = labels[:, 0]
    order = np.argsort(member_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, member_of[order][1:] != member_of[order][:-1]])
    ends = np.r_[starts[1:], len(order)]
    probing: dict[int, np.ndarray] = {}
    if labels.shape[1] > 1:
        extra = labels[:, 1:].reshape(-1)
        rows_of = np.repeat(np.arange(len(labels)), labels.shape[1] - 1)
        by = np.argsort(extra, kind="stable")
        cuts = np.flatnonzero(np.r_[True, extra[by][1:] != extra[by][:-1]])
        for s, e in zip(cuts, np.r_[cuts[1:], len(by)]):
            probing[int(extra[by[s]])] = rows_of[by[s:e]]
    firsts, seconds = [], []
    for s, e in zip(starts, ends):
        rows = np.sort(order[s:e])
        queries = np.concatenate([rows, probing.get(int(member_of[rows[0]]), np.zeros(0, dtype=np.int64))])
        if len(queries) < 2:
            continue
        sub = emb[rows]
        for r in range(0, len(queries), block):
            q = queries[r:r + block]
            ii, jj = np.nonzero(emb[q] @ sub.T >= threshold)
            a, b = q[ii], rows[jj]
            other = a != b
            firsts.append(np.minimum(a[other], b[other]))
            seconds.append(np.maximum(a[other], b[other]))
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    n = len(emb)
    code = np.unique(np.concatenate(firsts).astype(np.int64) * n + np.concatenate(seconds))
    return code // n, code % n
