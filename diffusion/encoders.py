"""Where a training job's frozen encoders (text encoder, VAE encoder) run: `parallel.encoders`.

Every backbone rank gets the same conditioned batches whatever the mode, so a run's losses do not depend
on it; only who spends the encoding work changes:
- replicated: every backbone rank encodes its data-parallel slot's batch (the ranks of one CP x TP lane
  all encode the same clips);
- colocated: the ranks of a lane split their slot's batch, each encodes its share, and an all-gather
  inside the lane gives every rank the whole conditioned batch (encoding costs 1/(cp x tp) per rank);
- disjoint: `encoder_ranks` ranks of their own load and encode (each serving dp / encoder_ranks slots)
  and stream the conditioned batches ahead to each slot's leader, which broadcasts inside its lane; the
  backbone ranks hold no encoder at all.

Batches that lost every sample (unreadable clips) are skipped by all ranks together, decided by the ranks
that load (the backbone in the first two modes, the encoder ranks in the third).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from diffusion.config import ExperimentConfig, from_dict, to_dict
from diffusion.errors import UserError

# a disjoint encoder rank runs at most this many optimizer steps ahead of the backbone
RUN_AHEAD_STEPS = 2


class Conditioner:
    """Turn loader batches into latent batches: VAE-encode video, text-encode captions (both frozen)."""

    def __init__(self, cfg: ExperimentConfig, text_encoder_dir: str, device: torch.device):
        from diffusion.text_encoder import TextEncoder
        from diffusion.vae import VideoVAE

        self.device = device
        self.text_encoder = TextEncoder.from_pretrained(text_encoder_dir, cfg.text).to(device)
        self.vae = VideoVAE(cfg.vae).to(device)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(list(captions))

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, C, H, W) uint8, or float already in [-1, 1] -> normalised latents (B, c, f, h, w)."""
        video = video.to(self.device, non_blocking=True)
        x = video.float() / 127.5 - 1.0 if video.dtype == torch.uint8 else video.float()
        return self.vae.encode(x.permute(0, 2, 1, 3, 4).contiguous())

    @torch.no_grad()
    def __call__(self, batch: dict, rows: slice | None = None) -> dict:
        """The conditioned batch (or only its samples `rows`, for a colocated share)."""
        rows = rows or slice(None)
        if "latents" in batch:
            out = {"latents": batch["latents"][rows], "text": batch["text"][rows],
                   "text_mask": batch["text_mask"][rows]}
        else:
            text, mask = self.encode_text(list(batch["caption"])[rows])
            video = batch["video"]
            if isinstance(video, list):  # a packed batch: clips of different shapes, encoded one by one
                latents = [self.encode_video(v[None])[0] for v in video[rows]]
            else:
                latents = self.encode_video(video[rows])
            out = {"latents": latents, "text": text, "text_mask": mask}
        if batch.get("pad_mask") is not None:
            out["pad_mask"] = torch.as_tensor(batch["pad_mask"], dtype=torch.bool)[rows]
        if batch.get("loss_mask") is not None:  # a packed batch: its token budget, for the packing metrics
            out["pack_tokens"] = int(batch["loss_mask"].shape[0])
        return out


# ------------------------------------------------------------------------------------------ loading


def batch_size(batch: dict) -> int:
    """Samples in a loader batch (the loader yields a batch whose samples all failed, so ranks keep count)."""
    if "num_samples" in batch:
        return int(batch["num_samples"])
    return len(batch.get("caption") or [])


def epochs(loader) -> Iterator[tuple[int, dict]]:
    """Endless (epoch, batch) pairs; the loader moves to its next epoch after a full pass."""
    empty = 0
    while True:
        epoch = loader.epoch
        got = False
        for batch in loader:
            got = True
            yield epoch, batch
        # a pass can be empty once: a run resumed right at the end of an epoch
        empty = 0 if got else empty + 1
        if empty >= 2:
            raise UserError("the training data gave no batch (too few clips for the batch size and buckets?)")


def next_usable(streams: list, group) -> tuple[int, list[dict], int]:
    """(epoch, one batch per stream, batches skipped): the next draw in which every batch of every rank of
    `group` has samples. Every rank draws the same number of batches, so they stay in step."""
    skipped = 0
    while True:
        drawn = [next(s) for s in streams]
        ok = torch.tensor([1 if all(batch_size(b) > 0 for _, b in drawn) else 0], dtype=torch.int32)
        if group is not None and dist.get_world_size(group) > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN, group=group)
        if int(ok):
            return drawn[0][0], [b for _, b in drawn], skipped
        skipped += 1


def _val_config(cfg: ExperimentConfig):
    # fixed batches of held-back data, or of the training data under another shuffle seed
    return from_dict(type(cfg.data), {**to_dict(cfg.data), "seed": cfg.data.seed + 7919, "start": "center"})


def _loaders(cfg: ExperimentConfig, sources, slots: list[int], dp: int):
    from dataload.loader import build_loader

    train = [build_loader(sources, cfg.data, rank=s, world_size=dp) for s in slots]
    val = []
    if cfg.train.val_every > 0:
        val_sources = [(p, 1.0) for p in cfg.train.val_data] or sources
        val = [build_loader(val_sources, _val_config(cfg), rank=s, world_size=dp) for s in slots]
    return train, val


# ------------------------------------------------------------------------------------------ backbone feeds


class LocalFeed:
    """Replicated and colocated encoders: the backbone rank loads its slot's batches and encodes them
    (all of them, or its lane share followed by an all-gather inside the lane)."""

    def __init__(self, cfg: ExperimentConfig, sources, par, device: torch.device, text_dir: str):
        self.cfg, self.par = cfg, par
        self.conditioner = Conditioner(cfg, text_dir, device)
        self.vae = self.conditioner.vae
        self.null_text = self.conditioner.encode_text([""])
        self.colocated = cfg.parallel.encoders == "colocated" and par.layout is not None
        self.lane = par.layout.group(("tp", "cp")) if self.colocated else None
        self.backbone = par.layout.group(("tp", "cp", "dp")) if par.layout is not None else None
        (self.loader,), val = _loaders(cfg, sources, [par.dp_rank], par.dp_size)
        self.stream = epochs(self.loader)
        self.val_batches = []
        if val:
            val_stream = epochs(val[0])
            for _ in range(cfg.train.val_batches):
                self.val_batches.append(self.encode(next_usable([val_stream], self.backbone)[1][0]))

    def encode(self, batch: dict) -> dict:
        if not self.colocated or dist.get_world_size(self.lane) == 1:
            return self.conditioner(batch)
        return _lane_gather(self.conditioner, batch, self.lane)

    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conditioner.encode_text([prompt])

    def next_step(self) -> tuple[int, list[dict], int]:
        micro, skipped, epoch = [], 0, 0
        for _ in range(self.cfg.train.grad_accum):
            epoch, (batch,), k = next_usable([self.stream], self.backbone)
            skipped += k
            micro.append(self.encode(batch))
        return epoch, micro, skipped

    def loader_state(self):
        return self.loader.state_dict()

    def load_loader_state(self, state) -> None:
        if state is None:
            return
        try:
            self.loader.load_state_dict(state)
        except ValueError as exc:  # other data or loader settings than the checkpoint's
            raise UserError(f"--resume: {exc}") from None


def _lane_gather(conditioner: Conditioner, batch: dict, lane) -> dict:
    """Encode this rank's share of the slot's batch and gather every share inside the lane."""
    n = batch_size(batch) if "num_samples" in batch else len(batch["latents"])
    size, me = dist.get_world_size(lane), dist.get_rank(lane)
    bounds = [round(i * n / size) for i in range(size + 1)]
    rows = slice(bounds[me], bounds[me + 1])
    mine = conditioner(batch, rows)
    width = max(bounds[i + 1] - bounds[i] for i in range(size))
    out = {}
    for key, t in mine.items():
        # every share padded to the widest, gathered, then cut back to the real rows, in lane order
        pad = torch.zeros((width, *t.shape[1:]), dtype=_wire(t.dtype), device=t.device)
        pad[: t.shape[0]] = t.to(pad.dtype)
        parts = [torch.empty_like(pad) for _ in range(size)]
        dist.all_gather(parts, pad, group=lane)
        whole = torch.cat([p[: bounds[i + 1] - bounds[i]] for i, p in enumerate(parts)])
        out[key] = whole.to(t.dtype)
    return out


def _wire(dtype: torch.dtype) -> torch.dtype:
    return torch.uint8 if dtype == torch.bool else dtype  # gloo does not gather booleans


# ------------------------------------------------------------------------------------------ disjoint encoders


_FIELDS = ("latents", "text", "text_mask", "pad_mask")


class _Wire:
    """Point-to-point transfer of conditioned batches from an encoder rank to a slot's leader, which
    broadcasts them inside its lane. Each transfer is a header (dtype and shape) then the data, tagged by
    a sequence number both sides count alike."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: deque[list] = deque()

    @staticmethod
    def _tag(seq: int, k: int) -> int:
        return (seq * 16 + k) % (1 << 30)

    def send(self, batch: dict, meta: list[int], peer: int, seq: int) -> list:
        from parallel.boundary import tensor_header

        works, keep = [], []
        items = [torch.tensor(meta, dtype=torch.int64)] + [batch.get(f) for f in _FIELDS]
        for k, t in enumerate(items):
            if t is None:
                t = torch.zeros(0, dtype=torch.uint8)
            t = t.to(self.device, _wire(t.dtype)).contiguous()
            h = tensor_header(t.shape, t.dtype, self.device)
            keep += [h, t]
            works.append(dist.isend(h, peer, tag=self._tag(seq, 2 * k)))
            works.append(dist.isend(t, peer, tag=self._tag(seq, 2 * k + 1)))
        return [works, keep]

    def recv(self, peer: int | None, seq: int, lane) -> tuple[list[int], dict]:
        """Receive on the lane leader (peer = the encoder rank) and broadcast to the lane."""
        from parallel.boundary import empty_from_header

        leader = peer is not None
        items = []
        for k in range(1 + len(_FIELDS)):
            h = torch.empty(9, dtype=torch.int64, device=self.device)
            if leader:
                dist.recv(h, peer, tag=self._tag(seq, 2 * k))
            root = None
            if lane is not None and dist.get_world_size(lane) > 1:
                root = dist.get_global_rank(lane, 0)
                dist.broadcast(h, root, group=lane)
            t = empty_from_header(h, self.device)
            if leader:
                dist.recv(t, peer, tag=self._tag(seq, 2 * k + 1))
            if root is not None:
                dist.broadcast(t, root, group=lane)
            items.append(t)
        meta = [int(v) for v in items[0].tolist()]
        batch = {}
        for f, t in zip(_FIELDS, items[1:]):
            if t.numel() == 0 and f == "pad_mask":
                continue
            batch[f] = t.bool() if f in ("text_mask", "pad_mask") else t
        return meta, batch


def encoder_rank_of(slot: int, dp: int, encoder_ranks: int, offset: int) -> int:
    """The encoder rank that serves a data-parallel slot (each serves dp / encoder_ranks consecutive slots)."""
    return offset + slot // (dp // encoder_ranks)


class DisjointFeed:
    """Backbone side of disjoint encoders: conditioned batches arrive from the encoder rank serving this
    rank's slot; the null text, the sample prompts and the validation batches arrive once at the start."""

    def __init__(self, cfg: ExperimentConfig, par, device: torch.device):
        pc = cfg.parallel
        self.cfg, self.par, self.device = cfg, par, device
        self.lane = par.layout.group(("tp", "cp"))
        coords = par.layout.coords()
        self.leader = coords["cp"] == 0 and coords["tp"] == 0
        self.peer = encoder_rank_of(par.dp_rank, pc.dp, pc.encoder_ranks, pc.backbone_ranks) if self.leader else None
        self.wire = _Wire(device)
        self.seq = 0
        self.null_text, self.prompts = _shared_texts(cfg, device, sender=False)
        self.vae = None  # built on first use (sample videos), on the ranks that decode them
        self.val_batches = [self._recv()[1] for _ in range(cfg.train.val_batches if cfg.train.val_every > 0 else 0)]

    def _recv(self) -> tuple[list[int], dict]:
        meta, batch = self.wire.recv(self.peer, self.seq, self.lane)
        self.seq += 1
        return meta, batch

    def next_step(self) -> tuple[int, list[dict], int]:
        micro, epoch, skipped = [], 0, 0
        for _ in range(self.cfg.train.grad_accum):
            (epoch, k), batch = self._recv()
            skipped += k
            micro.append(batch)
        return epoch, micro, skipped

    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if prompt not in self.prompts:
            raise UserError(f"disjoint encoders encode the sample prompts at the start; {prompt!r} is not one")
        return self.prompts[prompt]

    def decoder(self):
        if self.vae is None:
            from diffusion.vae import VideoVAE

            self.vae = VideoVAE(self.cfg.vae).to(self.device)
        return self.vae

    def loader_state(self):
        return None  # the encoder ranks hold it

    def load_loader_state(self, state) -> None:
        pass


def _shared_texts(cfg: ExperimentConfig, device, sender: bool, conditioner: Conditioner | None = None):
    """The empty prompt's and the sample prompts' embeddings, broadcast from the first encoder rank to
    every rank (collective over the world)."""
    prompts = [""] + list(cfg.train.sample_prompts or [""])
    src = cfg.parallel.backbone_ranks
    out = {}
    length, dim = cfg.text.max_length, cfg.text.dim or cfg.model.text_dim
    for p in prompts:
        if sender:
            text, mask = conditioner.encode_text([p])
            text, mask = text.to(device).float(), mask.to(device).to(torch.uint8)
        else:
            text = torch.empty((1, length, dim), dtype=torch.float32, device=device)
            mask = torch.empty((1, length), dtype=torch.uint8, device=device)
        dist.broadcast(text, src)
        dist.broadcast(mask, src)
        out[p] = (text, mask.bool())
    return out[""], out


class EncoderService:
    """An encoder rank of disjoint encoders: loads the batches of the slots it serves, encodes them and
    streams them to the slots' leaders, up to RUN_AHEAD_STEPS optimizer steps ahead."""

    def __init__(self, cfg: ExperimentConfig, sources, device: torch.device, text_dir: str, enc_layout):
        pc = cfg.parallel
        self.cfg, self.device = cfg, device
        e = enc_layout.rank_in("dp")
        per = pc.dp // pc.encoder_ranks
        self.slots = list(range(e * per, (e + 1) * per))
        self.group = enc_layout.group("dp")
        self.conditioner = Conditioner(cfg, text_dir, device)
        self.loaders, val = _loaders(cfg, sources, self.slots, pc.dp)
        self.streams = [epochs(ld) for ld in self.loaders]
        self.wire = _Wire(device)
        self.seq = 0
        from parallel.layout import ParallelLayout

        self.backbone = ParallelLayout(name="dit", dp=pc.dp, cp=pc.cp, tp=pc.tp)
        _shared_texts(cfg, device, sender=True, conditioner=self.conditioner)
        if val:
            val_streams = [epochs(ld) for ld in val]
            for _ in range(cfg.train.val_batches):
                _, batches, _ = next_usable(val_streams, self.group)
                self._send([self.conditioner(b) for b in batches], [0, 0])
            self._drain(0)

    def _send(self, batches: list[dict], meta: list[int]) -> None:
        step = []
        for slot, batch in zip(self.slots, batches):
            step.append(self.wire.send(batch, meta, self.backbone.rank_at(dp=slot), self.seq))
        self.seq += 1
        self.wire.pending.append(step)

    def _drain(self, keep: int) -> None:
        """Finish sends until at most `keep` batches are in flight."""
        while len(self.wire.pending) > keep:
            for works, _ in self.wire.pending.popleft():
                for w in works:
                    w.wait()

    def step(self) -> None:
        """One optimizer step's worth of batches (grad_accum draws) sent to every served slot."""
        for _ in range(self.cfg.train.grad_accum):
            epoch, batches, skipped = next_usable(self.streams, self.group)
            self._send([self.conditioner(b) for b in batches], [epoch, skipped])
        self._drain(RUN_AHEAD_STEPS * self.cfg.train.grad_accum)

    def finish(self) -> None:
        self._drain(0)

    def loader_state(self) -> dict:
        return {str(slot): ld.state_dict() for slot, ld in zip(self.slots, self.loaders)}

    def load_loader_state(self, state) -> None:
        if not state:
            return
        try:
            for slot, ld in zip(self.slots, self.loaders):
                ld.load_state_dict(state[str(slot)])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"--resume: the checkpoint's loader state does not fit these encoder ranks ({exc})") from None


def text_encoder_dir(run: Path, cfg: ExperimentConfig) -> str:
    local = Path(run) / "text_encoder"
    return str(local) if local.is_dir() else str(cfg.text.path)
