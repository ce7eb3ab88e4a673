"""Scalable dedup: hash bands and sampled k-means give the verdicts of the all-pairs method, without
comparing every pair."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curate.stages.dedup import lsh
from curate.stages.dedup.algorithm import DedupItem, find_duplicates, phash, relative_positions
from curate.stages.dedup.config import DedupConfig
from curate.stages.dedup.reference import find_duplicates_all_pairs
from curate.stages.dedup.semantic import cluster_labels


def _reencode(frame: np.ndarray, scale: float, quality: int) -> np.ndarray:
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (max(8, int(w * scale)), max(8, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def corpus() -> list[DedupItem]:
    """Clips of synthetic shots of every kind, hashed at dedup's positions; a third of them re-uploaded
    smaller and recompressed (some twice), so groups of near-duplicates of several sizes exist."""
    from dataload.synthetic import SHOT_KINDS, Shot, render_frames

    items = []
    rng = np.random.default_rng(5)
    positions = relative_positions(3)
    for c in range(60):
        kind = SHOT_KINDS[c % len(SHOT_KINDS)]
        frames = list(render_frames([Shot(kind, 24, seed=100 + c)], [], 160, 96, seed=c))
        picked = [frames[int(p * (len(frames) - 1))] for p in positions]
        items.append(DedupItem(f"clip-{c:03d}-orig", 160 * 96, np.array([phash(f) for f in picked], np.uint64)))
        for copy in range(int(rng.integers(0, 3)) if c % 3 == 0 else 0):
            scale, quality = (0.5, 30) if copy == 0 else (0.75, 20)
            hashed = np.array([phash(_reencode(f, scale, quality)) for f in picked], np.uint64)
            items.append(DedupItem(f"clip-{c:03d}-copy{copy}", int(160 * 96 * scale * scale), hashed))
    return items


def test_bands_find_the_all_pairs_duplicates_on_the_corpus(corpus):
    for distance in (2, 4, 8, 12):  # from strict to loose: more and larger groups
        cfg = DedupConfig(enabled=True, semantic=False, hash_max_distance=distance)
        expected = find_duplicates_all_pairs(corpus, cfg)
        assert find_duplicates(corpus, cfg) == expected
        if distance == 8:  # the default: every re-upload found, nothing else
            assert expected and all(k.rsplit("-", 1)[0] == v.rsplit("-", 1)[0] for k, v in expected.items())


def _near(rng, base: np.ndarray, bits_per_frame: int) -> np.ndarray:
    out = base.copy()
    for f in range(len(out)):
        for b in rng.choice(64, bits_per_frame, replace=False):
            out[f] ^= np.uint64(1) << np.uint64(b)
    return out


def test_bands_match_all_pairs_up_to_the_threshold_with_identical_groups_and_embeddings():
    rng = np.random.default_rng(11)
    n = 1500
    hashes = rng.integers(0, 2**64, (n, 3), dtype=np.uint64)
    for i in range(0, 300, 3):  # near copies at every distance up to just past the threshold (8 per frame)
        hashes[i + 1] = _near(rng, hashes[i], int(rng.integers(0, 10)))
    hashes[300:340] = hashes[340]  # a block of identical hashes (black clips), one of them near another
    hashes[341] = _near(rng, hashes[340], 3)
    emb = rng.standard_normal((n, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[400:420] = emb[420] + 0.01 * rng.standard_normal((20, 16))  # a semantic group across hash groups
    emb[305] = emb[420]
    pixels = rng.choice([100, 200, 400], n)
    items = [DedupItem(f"c{i:05d}", int(pixels[i]), hashes[i], emb[i]) for i in range(n)]
    for semantic in (False, True):
        cfg = DedupConfig(enabled=True, semantic=semantic, cosine_threshold=0.99)
        expected = find_duplicates_all_pairs(items, cfg)
        assert find_duplicates(items, cfg) == expected
        assert find_duplicates(items[::-1], cfg) == expected
        assert len(expected) > 100


def test_bands_compare_few_pairs(monkeypatch):
    """No all-pairs step: on 20k unrelated hashes the exact check sees a small fraction of the pairs."""
    checked = []
    real = lsh.mean_distance

    def counting(hashes, a, b):
        checked.append(len(a))
        return real(hashes, a, b)

    monkeypatch.setattr(lsh, "mean_distance", counting)
    n = 20_000
    hashes = np.random.default_rng(2).integers(0, 2**64, (n, 3), dtype=np.uint64)
    group, ga, gb = lsh.near_groups(hashes, 8)
    assert len(ga) == 0 and len(set(group.tolist())) == n
    assert sum(checked) < 20 * n  # all pairs would be n^2 / 2 = 10_000 n


def test_band_choice_meets_the_recall():
    bits, bands = lsh.choose_bands(100_000, 192, 24, recall=0.99)
    p = lsh.band_probability(24, 192, bits)
    assert 1 - (1 - p) ** bands >= 0.99 > 1 - (1 - p) ** (bands - 1)
    assert lsh.band_probability(0, 192, bits) == 1.0
    assert lsh.band_probability(24, 192, 180) == 0.0
    with pytest.raises(ValueError, match="lsh_band_bits"):
        lsh.choose_bands(10, 192, 24, recall=0.99, band_bits=180)
    # measured: pairs exactly at the threshold are found at about the promised rate
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**64, (400, 3), dtype=np.uint64)
    near = np.stack([_near(rng, b, 8) for b in base])
    _, ga, _ = lsh.near_groups(np.concatenate([base, near]), 8, recall=0.9)
    assert len(ga) >= 0.85 * 400


def test_sampled_kmeans_labels_do_not_depend_on_input_order():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((3000, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(3000)
    a = cluster_labels(emb, ids, clusters=20, sample=500, iters=10, seed=0)
    perm = rng.permutation(3000)
    b = cluster_labels(emb[perm], np.argsort(perm), clusters=20, sample=500, iters=10, seed=0)
    assert np.array_equal(a[perm], b)
    assert len(set(a.tolist())) == 20
