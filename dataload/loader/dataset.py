"""The IterableDataset that turns planned batches into tensors, split across loader workers.

Batch j of the rank's plan (from `start` on) is produced by worker (j - start) mod num_workers; torch's
DataLoader collects workers round-robin in order, so the batches come out in plan order for any worker
count.

Bad samples and the empty-batch contract. A sample that fails to read, decode or check when it is loaded
(garbage or hostile video bytes, a frame over `max_frame_pixels`, latents or text holding NaN/inf,
tensors that no longer match the index, a shard that became unreadable) is left out of its batch and
named with its reason in `batch["skipped"]` (a list of (shard:key, reason); the loader also counts it in
`VideoLoader.skipped` and names it in a one-line LoaderWarning). The other samples of the batch are
delivered; every per-sample entry (`video`/`latents`, `text`, `text_mask`, `caption`, `meta`,
`pad_mask`, `seq_lens`) then has one row per delivered sample, so a batch may hold fewer than
`batch_size` samples. `batch["num_samples"]` is that number (pad repeats included: `pad_mask` says which
rows are real).

When every sample of a planned batch fails, the batch is still yielded, so that every rank's batch count
stays equal (the plan gives each rank the same number of batches), but it is empty:
`batch["num_samples"] == 0`, its tensors have a batch dimension of 0 and `skipped` says why. A consumer
must never train on it; a distributed trainer skips it collectively (all ranks agree, e.g. with an
all-reduce of num_samples, to skip that step), so no rank waits on another.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch
from av.video.reformatter import VideoReformatter
from safetensors.torch import load as load_safetensors
from torch.utils.data import IterableDataset, get_worker_info

from dataload.errors import ShardError
from dataload.files import describe_os_error
from dataload.loader.config import Bucket, LoaderConfig
from dataload.loader.decode import decode_clip
from dataload.loader.plan import PlannedBatch, unit_hash
from dataload.loader.sources import LATENT_MEMBER, LATENT_TENSORS, SampleInfo, SourceIndex
from dataload.shards import _open_binary, read_members
from dataload.strict_json import parse_json_member

_MAX_OPEN = 16
_TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


@dataclass
class SampleTable:
    """Sample id -> where it lives and what the plan decided about it."""

    sources: list[SourceIndex]
    refs: list[tuple[int, int, int]]  # gid -> (source, shard, position in shard index)
    buckets: list[Bucket]  # curated: the config's buckets
    latent_shapes: list[tuple[int, ...]]  # latent: one "bucket" per distinct latents shape (and dtype)
    bucket_of: list[int | None]  # gid -> bucket index (None: left out of the plan)
    text_dim: int | None = None  # latent: the width D of every sample's text (L, D)

    def info(self, gid: int) -> tuple[SourceIndex, str, SampleInfo]:
        s, j, k = self.refs[gid]
        src = self.sources[s]
        return src, src.shards[j], src.samples[j][k]


class BatchProducer:
    """Reads and decodes the samples of planned batches; keeps a few shard files open."""

    def __init__(self, table: SampleTable, config: LoaderConfig):
        self.table = table
        self.config = config
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()
        self._sws: VideoReformatter | None = None  # one swscale context reused across same-size clips

    def __getstate__(self) -> dict[str, Any]:  # spawned workers: open files and swscale stay behind
        return {**self.__dict__, "_files": OrderedDict(), "_sws": None}

    def _file(self, shard: str) -> BinaryIO:
        f = self._files.pop(shard, None)
        if f is None:
            f = _open_binary(shard)
            while len(self._files) >= _MAX_OPEN:
                self._files.popitem(last=False)[1].close()
        self._files[shard] = f
        return f

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _load(self, gid: int, epoch: int) -> dict[str, Any]:
        src, shard, info = self.table.info(gid)
        cfg = self.config
        main = LATENT_MEMBER if src.kind == "latent" else "mp4"
        members = read_members(self._file(shard), info.entry, (main, "json", "txt"))
        meta = parse_json_member(members["json"], f"{shard}:{info.key}")
        caption = members["txt"].decode("utf-8", "replace") if "txt" in members else meta.get("caption")
        caption = caption if isinstance(caption, str) else ""
        if not caption.isascii():  # lone surrogates from JSON escapes would break any tokenizer
            caption = caption.encode("utf-8", "replace").decode("utf-8")
        out: dict[str, Any] = {"meta": meta, "caption": caption}
        if src.kind == "latent":
            out.update(self._latents(members[main], info))
            return out
        data = members[main]
        # The plan fixed the bucket; the window start is a pure function of (seed, epoch, sample).
        b = self._bucket_for(gid)
        frac = unit_hash(cfg.seed, epoch, "start", src.path, info.key) if cfg.start == "random" else 0.5
        if self._sws is None:
            self._sws = VideoReformatter()
        video = decode_clip(data, b, cfg.fps, frac, threads=cfg.decode_threads, reformatter=self._sws,
                            max_pixels=cfg.max_frame_pixels)
        if cfg.dtype == "float32":
            video = video.float().div_(127.5).sub_(1.0)
        out["video"] = video
        return out

    @staticmethod
    def _latents(data: bytes, info: SampleInfo) -> dict[str, torch.Tensor]:
        """The sample's tensors, checked: as the index saw them (shapes, dtypes) and finite."""
        try:
            tensors = load_safetensors(data)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on bad bytes
            raise ShardError(f"latents.safetensors is unreadable: {' '.join(str(e).split())[:160]}") from None
        out = {}
        for name in LATENT_TENSORS:
            t = tensors.get(name)
            if t is None:
                raise ShardError(f"latents.safetensors misses {name}")
            if list(t.shape) != info.shapes.get(name) or (name != "text_mask"
                                                          and t.dtype != _TORCH_DTYPES.get(info.dtypes.get(name))):
                raise ShardError(f"latents.safetensors: {name} is {list(t.shape)} {t.dtype}, the index saw "
                                 f"{info.shapes.get(name)} {info.dtypes.get(name)}")
            if name != "text_mask" and not bool(torch.isfinite(t).all()):
                raise ShardError(f"latents.safetensors: {name} holds non-finite values (NaN or inf)")
            out[name] = t
        return out

    def _bucket_for(self, gid: int) -> Bucket:
        b = self.table.bucket_of[gid]
        assert b is not None
        return self.table.buckets[b]

    def produce(self, pb: PlannedBatch, epoch: int) -> dict[str, Any]:
        loaded: list[tuple[int, bool, dict[str, Any]]] = []
        skipped: list[tuple[str, str]] = []
        cache: dict[int, dict[str, Any]] = {}
        for gid, real in zip(pb.gids, pb.real):
            src, shard, info = self.table.info(gid)
            if gid not in cache:
                try:
                    cache[gid] = self._load(gid, epoch)
                except OSError as e:
                    self._files.pop(shard, None)  # reopened (and checked again) next time
                    skipped.append((f"{shard}:{info.key}", f"{e.__class__.__name__}: {describe_os_error(e)}"))
                    cache[gid] = {}
                except Exception as e:  # noqa: BLE001 - one bad sample never stops the run
                    msg = " ".join(str(e).split())
                    skipped.append((f"{shard}:{info.key}", f"{e.__class__.__name__}: {msg[:300]}"))
                    cache[gid] = {}
            if cache[gid]:
                loaded.append((gid, real, cache[gid]))
        kind = self.table.sources[self.table.refs[pb.gids[0]][0]].kind if pb.gids else "curated"
        batch = self._collate(loaded, kind, pb)
        batch["num_samples"] = len(loaded)
        batch["skipped"] = skipped
        batch["padding"] = pb.padding
        return batch

    def _collate(self, loaded, kind: str, pb: PlannedBatch) -> dict[str, Any]:
        cfg = self.config
        metas = [x["meta"] for _, _, x in loaded]
        captions = [x["caption"] for _, _, x in loaded]
        out: dict[str, Any] = {"caption": captions, "meta": metas,
                               "pad_mask": torch.tensor([r for _, r, _ in loaded], dtype=torch.bool)}
        packed = cfg.pack_tokens is not None
        if kind == "latent":
            lat = [x["latents"] for _, _, x in loaded]
            texts = [x["text"] for _, _, x in loaded]
            masks = [x["text_mask"] for _, _, x in loaded]
            if lat or packed:
                out["latents"] = lat if packed else torch.stack(lat)
            else:  # an empty batch keeps its bucket's shape, with a batch dimension of 0
                shape = self.table.latent_shapes[pb.bucket][0] if 0 <= pb.bucket < len(self.table.latent_shapes) \
                    else ()
                out["latents"] = torch.empty((0, *shape))
            if texts:
                L = max(t.shape[0] for t in texts)
                D = texts[0].shape[-1]
                text = texts[0].new_zeros((len(texts), L, D))
                mask = torch.zeros((len(texts), L), dtype=torch.bool)
                for i, (t, m) in enumerate(zip(texts, masks)):
                    text[i, :t.shape[0]] = t
                    mask[i, :m.shape[0]] = m.bool()
                out["text"], out["text_mask"] = text, mask
            else:
                out["text"] = torch.empty((0, 0, self.table.text_dim or 0))
                out["text_mask"] = torch.empty((0, 0), dtype=torch.bool)
            shapes = [tuple(x.shape[-3:]) for x in lat]
        else:
            vids = [x["video"] for _, _, x in loaded]
            if vids or packed:
                out["video"] = vids if packed else torch.stack(vids)
            else:  # an empty batch keeps its bucket's shape, with a batch dimension of 0
                b = self.table.buckets[pb.bucket] if 0 <= pb.bucket < len(self.table.buckets) else None
                dtype = torch.float32 if cfg.dtype == "float32" else torch.uint8
                out["video"] = torch.empty((0, b.num_frames, 3, b.height, b.width) if b else (0,), dtype=dtype)
            shapes = [tuple(v.shape[0:1]) + tuple(v.shape[2:]) for v in vids]
        if packed:
            lens = [cfg.tokens(s) for s in shapes]
            cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
            if lens:
                cu[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
            assert cfg.pack_tokens is not None
            loss = torch.zeros(cfg.pack_tokens, dtype=torch.bool)
            loss[: int(cu[-1])] = True
            out.update(cu_seqlens=cu, seq_lens=lens, loss_mask=loss, num_tokens=int(cu[-1]))
        return out


class PlannedDataset(IterableDataset):
    """Yields the collated batches `plan[start:]` of one rank, shared out across loader workers."""

    def __init__(self, producer: BatchProducer, plan: list[PlannedBatch], start: int, epoch: int):
        super().__init__()
        self.producer = producer
        self.plan = plan
        self.start = start
        self.epoch = epoch

    def __iter__(self):
        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        if wi is not None:
            torch.set_num_threads(1)
        try:
            for j in range(self.start + wid, len(self.plan), nw):
                yield self.producer.produce(self.plan[j], self.epoch)
        finally:
            self.producer.close()
