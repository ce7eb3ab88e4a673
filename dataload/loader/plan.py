"""The epoch plan: which samples form which batch on which rank, computed from metadata alone.

Everything that decides order (shard shuffle, rank split, shuffle buffer, blending, buckets, packing) runs
here on sample ids before any video is decoded. That makes it cheap to compute every rank's plan on every
rank (so all ranks agree on the batch count), to skip ahead on resume without decoding, and to recompute
exactly which samples a stopped run consumed, even when it ran with another number of ranks.

Order of an epoch e, for seed s:
1. each source's shards are shuffled with (s, e, source) and their samples concatenated;
   samples consumed by an earlier segment of this epoch (a resume with another world size) are removed;
2. rank r of R takes the contiguous slice [r*n//R, (r+1)*n//R) of each source (balanced to one sample);
3. each slice passes a shuffle buffer seeded by (s, e, source, r); sources are blended by weight with a
   generator seeded by (s, e, r) until the first source of the rank runs out;
4. samples go to bucket queues, a batch is emitted when a queue is full (or samples are packed first-fit-
   decreasing into token budgets over a window);
5. ranks are equalised: `drop` truncates every rank to the smallest count, `pad` repeats batches marked as
   padding on the shorter ranks.
Batch j of a rank is produced by loader worker j mod num_workers, so the worker count never changes the
batches or their order.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from dataload.loader.config import Bucket, LoaderConfig


def seeded(*parts: object) -> random.Random:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) for (parts)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


@dataclass
class PlannedBatch:
    gids: list[int]
    bucket: int  # index into the bucket list (curated) or shape list (latent); -1 for a packed mix
    real: list[bool]  # False for samples repeated to fill a batch
    padding: bool = False  # a whole batch repeated so ranks have equal counts

    def real_gids(self) -> list[int]:
        return [] if self.padding else [g for g, r in zip(self.gids, self.real) if r]


@dataclass
class PlanContext:
    """Per-sample facts the plan needs: the source and shard of each sample id, its bucket and tokens."""

    config: LoaderConfig
    weights: list[float]
    shard_gids: list[list[list[int]]]  # [source][shard] -> gids in tar order
    bucket_of: list[int | None]  # per gid; None = left out (reason in `excluded_reason`)
    tokens_of: list[int]
    excluded_reason: dict[int, str] = field(default_factory=dict)


def assign_bucket(buckets: Sequence[Bucket], width: float, height: float, num_frames: int, clip_fps: float,
                  target_fps: float | None) -> int | None:
    """The bucket with the most frames the clip can fill, then the nearest aspect ratio; None if too short."""
    last_t = (num_frames - 1) / clip_fps  # time of the clip's last frame
    fits = []
    for i, b in enumerate(buckets):
        if target_fps is None:
            ok = b.num_frames <= num_frames
        else:
            ok = (b.num_frames - 1) / target_fps <= last_t + 0.5 / clip_fps
        if ok:
            fits.append(i)
    if not fits:
        return None
    most = max(buckets[i].num_frames for i in fits)
    aspect = width / height
    best = min((i for i in fits if buckets[i].num_frames == most),
               key=lambda i: (abs(math.log(buckets[i].aspect / aspect)), i))
    return best


def _buffer_shuffle(seq: list[int], size: int, rng: random.Random) -> list[int]:
    if size <= 1:
        return list(seq)
    buf: list[int] = []
    out: list[int] = []
    for x in seq:
        buf.append(x)
        if len(buf) >= size:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            out.append(buf.pop())
    while buf:
        i = rng.randrange(len(buf))
        buf[i], buf[-1] = buf[-1], buf[i]
        out.append(buf.pop())
    return out


def source_orders(ctx: PlanContext, epoch: int, consumed: set[int]) -> list[list[int]]:
    cfg = ctx.config
    out = []
    for s, shards in enumerate(ctx.shard_gids):
        order = list(range(len(shards)))
        if cfg.shuffle_shards:
            seeded(cfg.seed, epoch, "shards", s).shuffle(order)
        out.append([g for j in order for g in shards[j] if g not in consumed and ctx.bucket_of[g] is not None])
    return out


def rank_stream(ctx: PlanContext, epoch: int, orders: list[list[int]], rank: int, world: int) -> list[int]:
    cfg = ctx.config
    slices = []
    for s, seq in enumerate(orders):
        n = len(seq)
        part = seq[rank * n // world:(rank + 1) * n // world]
        slices.append(_buffer_shuffle(part, cfg.shuffle_buffer, seeded(cfg.seed, epoch, "buffer", s, rank)))
    if len(slices) == 1:
        return slices[0]
    # Blend: draw a source by weight per sample until the first source runs out (keeps the ratio exact
    # in expectation; the leftovers of the other sources wait for the next epoch).
    rng = seeded(cfg.seed, epoch, "blend", rank)
    total = sum(ctx.weights)
    cum = []
    acc = 0.0
    for w in ctx.weights:
        acc += w / total
        cum.append(acc)
    pos = [0] * len(slices)
    out = []
    while True:
        u = rng.random()
        s = next((i for i, c in enumerate(cum) if u < c), len(cum) - 1)
        if pos[s] >= len(slices[s]):
            break
        out.append(slices[s][pos[s]])
        pos[s] += 1
    return out


def make_batches(ctx: PlanContext, stream: list[int]) -> list[PlannedBatch]:
    cfg = ctx.config
    if cfg.pack_tokens is not None:
        return _pack(ctx, stream)
    queues: dict[int, list[int]] = {}
    out: list[PlannedBatch] = []
    for g in stream:
        b = ctx.bucket_of[g]
        assert b is not None
        q = queues.setdefault(b, [])
        q.append(g)
        if len(q) == cfg.batch_size:
            out.append(PlannedBatch(list(q), b, [True] * len(q)))
            q.clear()
    if cfg.remainder == "pad":
        for b in sorted(queues):
            q = queues[b]
            if q:
                fill = [q[i % len(q)] for i in range(cfg.batch_size)]
                out.append(PlannedBatch(fill, b, [i < len(q) for i in range(cfg.batch_size)]))
    return out


def _pack(ctx: PlanContext, stream: list[int]) -> list[PlannedBatch]:
    cfg = ctx.config
    cap = cfg.pack_tokens
    assert cap is not None
    out: list[PlannedBatch] = []
    window: list[int] = []

    def flush() -> None:
        order = sorted(range(len(window)), key=lambda i: (-ctx.tokens_of[window[i]], i))
        bins: list[tuple[list[int], list[int]]] = []  # (used, gids)
        for i in order:
            g = window[i]
            t = ctx.tokens_of[g]
            for used, gids in bins:
                if used[0] + t <= cap:
                    used[0] += t
                    gids.append(g)
                    break
            else:
                bins.append(([t], [g]))
        out.extend(PlannedBatch(gids, -1, [True] * len(gids)) for _, gids in bins)
        window.clear()

    for g in stream:
        window.append(g)
        if len(window) >= cfg.pack_window:
            flush()
    if window:
        flush()  # the end of data: whatever is left still gets packed
    return out


def plan_segment(ctx: PlanContext, epoch: int, consumed: set[int], world: int) -> list[list[PlannedBatch]]:
    """Every rank's batches for this (epoch, world size), after removing `consumed` samples."""
    orders = source_orders(ctx, epoch, consumed)
    per_rank = [make_batches(ctx, rank_stream(ctx, epoch, orders, r, world)) for r in range(world)]
    counts = [len(b) for b in per_rank]
    if ctx.config.remainder == "drop":
        n = min(counts)
        return [b[:n] for b in per_rank]
    n = max(counts)
    donor = next((b for b in per_rank if b), [])
    for b in per_rank:
        src = b if b else donor
        extra = [PlannedBatch(src[i % len(src)].gids, src[i % len(src)].bucket, src[i % len(src)].real, True)
                 for i in range(n - len(b))]
        b.extend(extra)
    return per_rank


def consumed_by(plans: list[list[PlannedBatch]], k: int) -> set[int]:
    """Samples that all ranks together consumed in their first k batches."""
    out: set[int] = set()
    for batches in plans:
        for pb in batches[:k]:
            out.update(pb.real_gids())
    return out
