"""Candidate pairs of perceptual hashes without comparing every pair: locality-sensitive hashing by bit
sampling (banding).

Each clip's hash is the concatenation of its frames' 64-bit pHashes (B = 64 x frames bits). A band is a
fixed, seeded sample of ``band_bits`` of those B bit positions; two clips are candidates when they agree
on every sampled bit of at least one of ``bands`` bands, and candidates are then checked exactly. Two
clips whose hashes differ in D bits agree on one band with probability
``p(D) = C(B - D, band_bits) / C(B, band_bits)`` and share at least one band with
``1 - (1 - p(D)) ** bands``: the closer the hashes, the surer the find. The defaults choose ``band_bits``
from the number of clips (log2(clips) + 1, so unrelated clips rarely collide: about ``bands / 4`` random
candidates per clip)
and ``bands`` so that a pair exactly at the threshold distance is found with probability ``recall``;
re-uploads, which sit well inside the threshold, are found with a probability much closer to 1.

Work grows with clips x bands (a sort per band) plus the candidates, instead of clips squared.
Rows that are exactly equal are collapsed first, so a large group of identical hashes (black clips, a
video uploaded many times) costs one row.
"""

from __future__ import annotations

import math

import numpy as np


def band_probability(distance: int, total_bits: int, band_bits: int) -> float:
    """Probability that two hashes ``distance`` bits apart agree on a random sample of ``band_bits`` bits."""
    if band_bits > total_bits - distance:
        return 0.0
    p = 1.0
    for t in range(band_bits):
        p *= (total_bits - distance - t) / (total_bits - t)
    return p


def choose_bands(n: int, total_bits: int, threshold_bits: int, *, recall: float, band_bits: int = 0,
                 bands: int = 0) -> tuple[int, int]:
    """``(band_bits, bands)``: the given values, or for 0 the automatic ones (module docstring)."""
    if band_bits <= 0:
        band_bits = max(12, math.ceil(math.log2(max(n, 2))) + 1)
    band_bits = min(band_bits, total_bits)
    if bands <= 0:
        p = band_probability(threshold_bits, total_bits, band_bits)
        if p >= 1.0:
            bands = 1
        elif p <= 0.0:
            raise ValueError(f"a band of {band_bits} of {total_bits} bits can never match at distance "
                             f"{threshold_bits}: lower models.dedup.lsh_band_bits")
        else:
            bands = max(1, math.ceil(math.log(1.0 - recall) / math.log(1.0 - p)))
    return band_bits, bands


def pairs_in_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of indices with equal ``keys`` (uint32, or byte strings)."""
    n = len(keys)
    if keys.dtype == np.uint32 and n < 2**32:  # one sort of key and index packed in a word beats an argsort
        packed = np.sort((keys.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64))
        k = packed >> np.uint64(32)
        order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    else:
        order = np.argsort(keys, kind="stable")
        k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    lengths = np.diff(np.r_[starts, n])
    multi = lengths >= 2
    starts, lengths = starts[multi], lengths[multi]
    # positions inside runs of two or more, with the exclusive end of their run
    pos = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    run_end = np.repeat(starts + lengths, lengths)
    firsts, seconds = [], []
    d = 1
    while True:
        inside = pos + d < run_end
        pos, run_end = pos[inside], run_end[inside]
        if not pos.size:
            break
        a, b = order[pos], order[pos + d]
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
        d += 1
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(firsts), np.concatenate(seconds)


def band_keys(bit_rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The sampled bits ``cols`` of every hash as one key: uint32 for up to 32 bits, else byte strings."""
    m = bit_rows.shape[1]
    if len(cols) <= 32:
        keys = np.zeros(m, dtype=np.uint32)
        tmp = np.empty(m, dtype=np.uint32)
        for t, c in enumerate(cols):
            np.left_shift(bit_rows[c], np.uint32(t), out=tmp, dtype=np.uint32)
            keys |= tmp
        return keys
    packed = np.packbits(bit_rows[cols], axis=0)
    return np.ascontiguousarray(packed.T).view(np.dtype((np.void, len(packed)))).reshape(-1)


def distinct_rows(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uniq, group)``: the distinct rows of ``hashes`` (n, frames) and each row's index among them."""
    n = len(hashes)
    order = np.lexsort(hashes.T[::-1])
    s = hashes[order]
    new = np.r_[True, np.any(s[1:] != s[:-1], axis=1)] if n else np.zeros(0, dtype=bool)
    ids = np.cumsum(new) - 1
    group = np.empty(n, dtype=np.int64)
    group[order] = ids
    return s[new], group


def mean_distance(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean Hamming distance per frame between rows ``a`` and ``b`` of ``hashes`` (n, frames) uint64."""
    out = np.empty(len(a), dtype=np.float64)
    step = 1 << 20  # bounded memory for many candidates
    for s in range(0, len(a), step):
        x = np.bitwise_xor(hashes[a[s:s + step]], hashes[b[s:s + step]])
        out[s:s + step] = np.bitwise_count(x).sum(axis=1, dtype=np.int64) / hashes.shape[1]
    return out


def near_groups(hashes: np.ndarray, max_mean_distance: float, *, recall: float = 0.99, band_bits: int = 0,
                bands: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near pairs among the rows of ``hashes`` ((n, frames) uint64), as groups: ``(group, ga, gb)`` where
    ``group[i]`` numbers row i's distinct hash (equal rows share a group, at distance 0) and ``(ga[k], gb[k])``,
    ``ga < gb``, are the pairs of distinct hashes whose mean Hamming distance per frame is at most
    ``max_mean_distance``. Pairs are found through bands and checked exactly; a pair at the threshold
    distance is missed with probability at most ``1 - recall`` (closer pairs far less often)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n, frames = hashes.shape
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return empty, empty, empty
    uniq, group = distinct_rows(hashes)
    m = len(uniq)
    if m < 2:
        return group, empty, empty
    total_bits = 64 * frames
    threshold_bits = int(math.floor(max_mean_distance * frames + 1e-9))
    band_bits, n_bands = choose_bands(m, total_bits, threshold_bits, recall=recall, band_bits=band_bits,
                                      bands=bands)
    # one row per bit position (total_bits, m): a band's bits are then a few whole rows
    by_byte = np.ascontiguousarray(uniq.view(np.uint8).T)
    bit_rows = np.unpackbits(by_byte[:, None, :], axis=1).reshape(total_bits, m)
    rng = np.random.default_rng(seed)
    near_a, near_b = [], []
    for _ in range(n_bands):
        cols = np.sort(rng.choice(total_bits, size=band_bits, replace=False))
        a, b = pairs_in_runs(band_keys(bit_rows, cols))
        if len(a):
            close = mean_distance(uniq, a, b) <= max_mean_distance + 1e-9
            near_a.append(a[close])
            near_b.append(b[close])
    if not near_a:
        return group, empty, empty
    code = np.unique(np.concatenate(near_a) * m + np.concatenate(near_b))
    return group, code // m, code % m
