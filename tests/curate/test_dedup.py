"""Dedup building blocks: perceptual hashes, k-means, and which clip of a group is kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curate.stages.dedup.algorithm import DedupItem, find_duplicates, hamming, kmeans, phash
from curate.stages.dedup.config import DedupConfig


def _scene(seed: int, h: int = 180, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (9, 16, 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (0, 0), 3)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_phash_survives_resize_and_recompression_but_separates_scenes():
    a = _scene(1)
    h = np.array([phash(a)], dtype=np.uint64)
    smaller = _jpeg(cv2.resize(a, (160, 90), interpolation=cv2.INTER_AREA), 30)
    assert int(hamming(h, np.array([phash(smaller)], dtype=np.uint64))[0]) <= 4
    others = np.array([phash(_scene(s)) for s in range(2, 12)], dtype=np.uint64)
    assert hamming(others, h).min() > 12
    assert phash(a) == phash(a.copy())  # pure function
    assert phash(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)) == phash(a)


def test_hamming_counts_bits():
    a = np.array([0b1011, 2**63], dtype=np.uint64)
    b = np.array([0b0001, 0], dtype=np.uint64)
    assert hamming(a, b).tolist() == [2, 1]


def test_kmeans_is_deterministic_and_finds_separated_groups():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:3]
    x = np.concatenate([c + 0.05 * rng.standard_normal((20, 8)) for c in centers])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = kmeans(x, 3, seed=1)
    assert np.array_equal(a, kmeans(x, 3, seed=1))
    for g in range(3):  # each true group lands in one cluster, and the groups in different ones
        assert len(set(a[g * 20:(g + 1) * 20])) == 1
    assert len(set(a)) == 3
    assert kmeans(x[:2], 5).shape == (2,)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_keeps_highest_resolution_then_lowest_id_and_names_the_kept_clip():
    cfg = DedupConfig(enabled=True, cosine_threshold=0.95, hash_max_distance=4)
    h1 = np.array([0x0F0F0F0F0F0F0F0F, 0x123456789ABCDEF0], dtype=np.uint64)
    h1_noisy = h1 ^ np.array([0b101, 0b1], dtype=np.uint64)  # 2 and 1 bits off
    rng = np.random.default_rng(3)
    far = rng.integers(0, 2**63, 2, dtype=np.int64).astype(np.uint64)
    e = _unit(rng.standard_normal(16))
    near = _unit(e + 0.05 * _unit(rng.standard_normal(16)))
    other = _unit(rng.standard_normal(16))
    items = [
        DedupItem("c-small-reupload", 160 * 90, h1_noisy, _unit(rng.standard_normal(16))),
        DedupItem("b-big-original", 320 * 180, h1, _unit(rng.standard_normal(16))),
        DedupItem("z-semantic-a", 320 * 180, far, e),
        DedupItem("a-semantic-b", 320 * 180, far ^ np.uint64(2**40 - 1), near),  # hashes far apart
        DedupItem("m-unique", 320 * 180, ~h1, other),
    ]
    dup = find_duplicates(items, cfg)
    assert dup == {"c-small-reupload": "b-big-original", "z-semantic-a": "a-semantic-b"}
    # the order of the input does not matter
    assert find_duplicates(items[::-1], cfg) == dup
    # without hashes only the semantic pair is found; without semantic, only the hashed one
    no_hash = [DedupItem(i.clip_id, i.pixels, None, i.embedding) for i in items]
    assert find_duplicates(no_hash, cfg) == {"z-semantic-a": "a-semantic-b"}
    off = DedupConfig(enabled=True, semantic=False, hash_max_distance=4)
    assert find_duplicates(items, off) == {"c-small-reupload": "b-big-original"}


@pytest.mark.parametrize("clusters", [0, 1, 4])
def test_semantic_groups_survive_clustering(clusters):
    rng = np.random.default_rng(7)
    bases = [_unit(rng.standard_normal(32)) for _ in range(12)]
    items = []
    for g, b in enumerate(bases):
        for k in range(2):  # each base has a near copy
            items.append(DedupItem(f"g{g:02d}-{k}", 100, None, _unit(b + 0.03 * _unit(rng.standard_normal(32)))))
    cfg = DedupConfig(enabled=True, cosine_threshold=0.98, clusters=clusters)
    dup = find_duplicates(items, cfg)
    assert dup == {f"g{g:02d}-1": f"g{g:02d}-0" for g in range(12)}
