"""VideoLoader: the rank's iterable over batches, with exact resume.

State is tiny: the epoch, the batches yielded so far in the current segment, and the earlier segments of
the epoch that ran with another world size. Because the plan is a pure function of metadata, that is
enough to rebuild everything:

* same world size (any worker count): a resumed run yields exactly the batches, in order, that an
  uninterrupted run yields from batch K on;
* another world size: the samples the old ranks consumed (all ranks' first K batches) are recomputed and
  removed; the rest of the epoch is re-split over the new ranks. No sample of the epoch is repeated or
  skipped, except those that the remainder rule drops at the end of the epoch (see LoaderConfig).
"""

from __future__ import annotations

import gc
import warnings
from collections import Counter
from typing import Any, Iterator

from torch.utils.data import DataLoader

from dataload.errors import LoaderWarning
from dataload.loader.config import LoaderConfig
from dataload.loader.dataset import BatchProducer, PlannedDataset, SampleTable
from dataload.loader.plan import PlanContext, PlannedBatch, assign_bucket, consumed_by, plan_segment
from dataload.loader.sources import SourceIndex, index_source

STATE_VERSION = 1
_WARN_NAMES = 5


def _one_line(text: str, limit: int = 300) -> str:
    """Control characters escaped, undecodable bytes shown as escapes, cut to `limit`: one printable line."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _warn_skipped(items: list[tuple[str, str]], when: str) -> None:
    """One LoaderWarning of one line naming the skipped samples (the first few) and why."""
    if not items:
        return
    names = "; ".join(f"{_one_line(n, 200)} ({_one_line(r)})" for n, r in items[:_WARN_NAMES])
    more = f"; and {len(items) - _WARN_NAMES} more" if len(items) > _WARN_NAMES else ""
    warnings.warn(f"skipped {len(items)} sample(s) {when}: {names}{more}", LoaderWarning, stacklevel=3)


class VideoLoader:
    def __init__(self, sources: list[tuple[str, float]], config: LoaderConfig, *, rank: int = 0,
                 world_size: int = 1, indexes: list[SourceIndex] | None = None):
        if not sources:
            raise ValueError("at least one data source is needed")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        for p, w in sources:
            if not w > 0:
                raise ValueError(f"weight of {p} must be > 0, got {w}")
        self.config = config
        self.rank = rank
        self.world_size = world_size
        caps = {"max_member_bytes": config.max_member_bytes,
                "max_small_member_bytes": config.max_small_member_bytes,
                "max_frame_pixels": config.max_frame_pixels}
        self.indexes = indexes if indexes is not None else [index_source(p, **caps) for p, _ in sources]
        kinds = {ix.kind for ix in self.indexes}
        if len(kinds) > 1:
            raise ValueError("cannot blend curated and latent sources in one loader")
        self.kind = kinds.pop()
        self.weights = [float(w) for _, w in sources]
        self.skipped: list[tuple[str, str]] = []
        for ix in self.indexes:
            self.skipped.extend(ix.skipped)
        _warn_skipped(self.skipped, "while indexing")
        self._ctx, self._table = self._build_tables()
        self.epoch = 0
        self._history: list[tuple[int, int]] = []  # earlier segments of this epoch: (world size, batches)
        self._step = 0
        self._plan_cache: tuple[Any, list[list[PlannedBatch]]] | None = None

    # ----------------------------------------------------------------------------------- tables

    def _build_tables(self) -> tuple[PlanContext, SampleTable]:
        cfg = self.config
        buckets = cfg.bucket_list()
        refs: list[tuple[int, int, int]] = []
        bucket_of: list[int | None] = []
        tokens_of: list[int] = []
        shard_gids: list[list[list[int]]] = []
        shapes: dict[tuple[Any, ...], int] = {}
        excluded: dict[int, str] = {}
        # Latent text of one width only (a batch pads the lengths, not the widths): the most common wins.
        widths = Counter(info.shapes["text"][1] for ix in self.indexes if ix.kind == "latent"
                         for samples in ix.samples for info in samples)
        text_dim = min(widths, key=lambda d: (-widths[d], d)) if widths else None
        for s, ix in enumerate(self.indexes):
            per_shard = []
            for j, samples in enumerate(ix.samples):
                gids = []
                for k, info in enumerate(samples):
                    gid = len(refs)
                    refs.append((s, j, k))
                    gids.append(gid)
                    if ix.kind == "latent":
                        shape = tuple(info.shapes["latents"])
                        tok = cfg.tokens(tuple(shape[-3:]))  # type: ignore[arg-type]
                        if info.shapes["text"][1] != text_dim:
                            b = None
                            excluded[gid] = f"text width {info.shapes['text'][1]} differs from the data's {text_dim}"
                        else:  # one batch shape and dtype per bucket, so batches stack
                            b = shapes.setdefault((shape, info.dtypes["latents"]), len(shapes))
                    else:
                        m = info.facts
                        b = assign_bucket(buckets, m["width"], m["height"], int(m["num_frames"]),
                                          float(m["fps"]), cfg.fps)
                        tok = cfg.tokens((buckets[b].num_frames, buckets[b].height, buckets[b].width)) \
                            if b is not None else 0
                        if b is None:
                            excluded[gid] = "too short for every bucket"
                    if b is not None and cfg.pack_tokens is not None and tok > cfg.pack_tokens:
                        excluded[gid] = f"needs {tok} tokens > pack_tokens {cfg.pack_tokens}"
                        b = None
                    bucket_of.append(b)
                    tokens_of.append(tok)
                per_shard.append(gids)
            shard_gids.append(per_shard)
        left_out = [(self._name(refs[g]), r) for g, r in excluded.items()]
        self.skipped.extend(left_out)
        _warn_skipped(left_out, "by the bucket/packing rules")
        ctx = PlanContext(cfg, self.weights, shard_gids, bucket_of, tokens_of, excluded)
        table = SampleTable(self.indexes, refs, buckets, list(shapes), bucket_of, text_dim)
        return ctx, table

    def _name(self, ref: tuple[int, int, int]) -> str:
        s, j, k = ref
        ix = self.indexes[s]
        return f"{ix.shards[j]}:{ix.samples[j][k].key}"

    # ----------------------------------------------------------------------------------- plan

    def _segment_plans(self) -> list[list[PlannedBatch]]:
        key = (self.epoch, tuple(self._history), self.world_size)
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        consumed: set[int] = set()
        for world, k in self._history:
            consumed |= consumed_by(plan_segment(self._ctx, self.epoch, consumed, world), k)
        plans = plan_segment(self._ctx, self.epoch, consumed, self.world_size)
        self._plan_cache = (key, plans)
        return plans

    def plan(self) -> list[PlannedBatch]:
        """This rank's batches of the current segment of the epoch (from its start)."""
        return self._segment_plans()[self.rank]

    def __len__(self) -> int:
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._history = []
            self._step = 0

    # ----------------------------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan = self.plan()
        producer = BatchProducer(self._table, self.config)
        ds = PlannedDataset(producer, plan, self._step, self.epoch)
        nw = self.config.num_workers
        if nw == 0:
            it: Iterator[dict[str, Any]] = iter(ds)
        else:
            # Workers are forked: garbage still waiting for the cycle collector here would be freed in
            # each worker instead, and freeing a PyAV decoder there waits forever for its frame threads
            # (fork does not copy threads). Collect it first.
            gc.collect()
            it = iter(DataLoader(ds, batch_size=None, num_workers=nw, prefetch_factor=self.config.prefetch_factor,
                                 persistent_workers=False))
        for batch in it:
            self._step += 1
            if batch["skipped"]:
                self.skipped.extend(batch["skipped"])
                _warn_skipped(batch["skipped"], f"in batch {self._step - 1} of epoch {self.epoch}")
            yield batch
        # A full pass: the next iteration is the next epoch.
        self.epoch += 1
        self._history = []
        self._step = 0

    # ----------------------------------------------------------------------------------- state

    def _fingerprint(self) -> dict[str, Any]:
        return {"config": self.config.fingerprint(), "weights": self.weights,
                "sources": [[ix.path, ix.num_samples] for ix in self.indexes]}

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "epoch": self.epoch, "world_size": self.world_size,
                "step": self._step, "history": [list(h) for h in self._history],
                "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r} is not {STATE_VERSION}")
        if state["fingerprint"] != self._fingerprint():
            raise ValueError("loader state is from another data set or loader config; cannot resume it exactly")
        self.epoch = int(state["epoch"])
        history = [(int(w), int(k)) for w, k in state["history"]]
        if int(state["world_size"]) == self.world_size:
            self._history, self._step = history, int(state["step"])
        else:
            self._history = history + [(int(state["world_size"]), int(state["step"]))]
            self._step = 0
        self._plan_cache = None


def build_loader(sources: list[tuple[str, float]] | list[str], config: LoaderConfig, *, rank: int = 0,
                 world_size: int = 1) -> VideoLoader:
    """The trainer's entry point: sources as (path, weight) pairs (a bare path has weight 1)."""
    pairs = [(s, 1.0) if isinstance(s, str) else (str(s[0]), float(s[1])) for s in sources]
    return VideoLoader(pairs, config, rank=rank, world_size=world_size)
