"""`python -m benchmarks dedup`: how dedup's cost grows with the number of clips, against all-pairs.

Synthetic items, seeded: random 3-frame pHashes (64 bits a frame) and random unit embeddings, of which 5%
are planted near copies of another item (hashes a few bits away per frame, embeddings at cosine ~0.999).
Each contender runs the whole `find_duplicates` (ranking, candidates, exact checks, the greedy verdicts)
on hashes only (semantic off) and on embeddings only:
- `bands / sampled k-means`: the scalable dedup of runs (hash bands; k-means fitted on a sample, pairs
  compared within clusters);
- `all-pairs`: every clip against every kept clip (`curate/stages/dedup/reference.py`), run while it fits
  in time (`--all-pairs-max`), and checked to give the same verdicts.
Reported: items per second, seconds, the growth exponent of the time against the previous size (1 is
linear, 2 quadratic) and the planted copies found. Sizes at and above 100k run once (no repetitions).
"""

from __future__ import annotations

import math
import time

import numpy as np

from benchmarks.harness import BenchResult, median

HASH_SIZES = (10_000, 100_000, 1_000_000)
EMBED_SIZES = (10_000, 100_000)
EMBED_DIM = 64


def add_arguments(parser) -> None:
    parser.add_argument("--hash-sizes", default=",".join(map(str, HASH_SIZES)), help="item counts for hashes")
    parser.add_argument("--embed-sizes", default=",".join(map(str, EMBED_SIZES)),
                        help="item counts for embeddings (add 1000000 for the full curve: about a minute more)")
    parser.add_argument("--embed-dim", type=int, default=EMBED_DIM, help="embedding width")
    parser.add_argument("--all-pairs-max", type=int, default=10_000,
                        help="largest size the all-pairs method also runs at (it grows quadratically)")


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(copy rows, their source rows): 5% of the items are near copies of another one."""
    rng = np.random.default_rng(seed + 1)
    m = n // 20
    rows = rng.permutation(n)
    return rows[:m], rows[m:2 * m]


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, (n, 3), dtype=np.uint64)
    copies, sources = planted(n, seed)
    flips = np.zeros((len(copies), 3), dtype=np.uint64)
    for f in range(3):  # up to 4 bits per frame, within the default threshold of 8
        for _ in range(4):
            flips[:, f] |= np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
    h[copies] = h[sources] ^ flips
    return h


def synthetic_embeddings(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, dim))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    copies, sources = planted(n, seed)
    noise = rng.standard_normal((len(copies), dim))
    e[copies] = e[sources] + 0.04 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    e[copies] /= np.linalg.norm(e[copies], axis=1, keepdims=True)
    return e


def _items(n: int, hashes: np.ndarray | None, emb: np.ndarray | None):
    from curate.stages.dedup.algorithm import DedupItem

    return [DedupItem(f"clip-{i:08d}", 100, None if hashes is None else hashes[i], None if emb is None else emb[i])
            for i in range(n)]


def _found(dup: dict[str, str], n: int) -> float:
    """Share of the planted copies that came out as duplicates (of their source or of a copy of it)."""
    copies, sources = planted(n)
    names = [f"clip-{i:08d}" for i in range(n)]
    hit = sum(1 for c, s in zip(copies, sources) if names[c] in dup or names[s] in dup)
    return hit / max(1, len(copies))


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(args) -> BenchResult:
    from curate.stages.dedup.algorithm import find_duplicates
    from curate.stages.dedup.config import DedupConfig
    from curate.stages.dedup.reference import find_duplicates_all_pairs

    rows = []
    agree: dict[str, bool] = {}
    for signal, sizes in (("hashes", _sizes(args.hash_sizes)), ("embeddings", _sizes(args.embed_sizes))):
        cfg = DedupConfig(enabled=True, semantic=signal == "embeddings")
        previous: dict[str, tuple[int, float]] = {}
        for n in sizes:
            if signal == "hashes":
                items = _items(n, synthetic_hashes(n), None)
            else:
                items = _items(n, None, synthetic_embeddings(n, args.embed_dim))
            contenders = {"bands / sampled k-means": find_duplicates}
            if n <= args.all_pairs_max:
                contenders["all-pairs"] = find_duplicates_all_pairs
            results = {}
            for name, fn in contenders.items():
                repeats = max(1, args.repeats) if n < 100_000 and name != "all-pairs" else 1
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    results[name] = fn(items, cfg)
                    times.append(time.perf_counter() - t0)
                sec = median(times)
                grow = None
                if name in previous:
                    pn, ps = previous[name]
                    grow = math.log(sec / ps) / math.log(n / pn)
                previous[name] = (n, sec)
                rows.append({"signal": signal, "items": n, "method": name, "seconds": sec,
                             "items_per_s": n / sec, "growth_exponent": grow,
                             "planted_found": _found(results[name], n), "duplicates": len(results[name])})
            if "all-pairs" in results:
                agree[f"{signal} {n}"] = results["all-pairs"] == results["bands / sampled k-means"]
    ratios = {}
    for signal in ("hashes", "embeddings"):
        pair = {r["method"]: r["seconds"] for r in rows if r["signal"] == signal and r["items"] == 10_000}
        if len(pair) == 2:
            ratios[f"{signal} at 10k: all-pairs / scalable (time)"] = pair["all-pairs"] / pair["bands / sampled k-means"]
    notes = []
    for r in rows:  # all-pairs past where it ran, extrapolated from its largest run (quadratic: every pair)
        if r["method"] == "all-pairs" and r["items"] == max(x["items"] for x in rows if x["method"] == "all-pairs"
                                                             and x["signal"] == r["signal"]):
            bigger = [n for n in (_sizes(args.hash_sizes) if r["signal"] == "hashes" else _sizes(args.embed_sizes))
                      if n > r["items"]]
            if bigger:
                notes.append(f"all-pairs {r['signal']}, extrapolated as n^2 from {r['items']}: " + ", ".join(
                    f"{n}: ~{r['seconds'] * (n / r['items']) ** 2:.3g} s" for n in bigger))
    notes += [f"embedding width {args.embed_dim}; growth_exponent: log(time ratio) / log(size ratio) against the "
             "previous size of the same method (1 = linear, 2 = quadratic)",
             "same verdicts as all-pairs: " + (", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in agree.items())
                                               or "not run")]
    return BenchResult("dedup", ["signal", "items", "method", "seconds", "items_per_s", "growth_exponent",
                                 "planted_found", "duplicates"], rows, ratios=ratios, notes=notes,
                       extra={"same_as_all_pairs": agree})
