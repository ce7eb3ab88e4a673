"""The training step and its state: FSDP2 over data parallel, context parallel over a CP group.

Randomness that decides the loss (timestep, noise, caption dropout) is drawn per sample from a
generator seeded by (seed, step, global sample index). So every rank of a context-parallel group sees
the same noise, a data-parallel run sees the same noise as one process on the same global batch, and
a resumed run draws exactly what an uninterrupted one would.

A packed batch (`batch["latents"]` a list of per-sample latents of different shapes, one sequence in the
DiT) draws the same way per sample, from a stream of its data-parallel rank (packs hold different numbers
of samples on different ranks); its loss counts the real samples' elements only.

Gradient convention: every rank computes the loss of its data-parallel slice over the whole sequence
(the DiT gathers its output over the CP group), scaled by (local samples / global samples); FSDP2
sums (not averages) gradients over all dp x cp ranks, and the CP gather's backward hands each rank
only its own part of the sequence, so the sum is exactly the single-process gradient.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from diffusion.ema import EMA
from diffusion.lora import LoRAConfig
from diffusion.objective import FlowMatching, FlowMatchingConfig
from diffusion.optim import OptimConfig, build_optimizer, build_scheduler, clip_grads


@dataclass
class TrainConfig:
    steps: int = 1000                  # total optimizer steps; also the length of the LR schedule
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema_decay: float = 0.999           # 0 disables EMA
    log_every: int = 1
    checkpoint_every: int = 500        # and always at the last step
    val_every: int = 0                 # 0 disables validation loss
    val_batches: int = 1               # validation batches drawn once before training
    val_data: list[str] = field(default_factory=list)  # held-back data folders; empty: training data
    sample_every: int = 0              # 0 disables sample videos in RUN/samples
    sample_prompts: list[str] = field(default_factory=list)
    sample_frames: int = 0             # 0: the training clip length
    activation_checkpointing: bool = False
    dtype: str = "float32"             # parameter dtype: float32 | float64 (parity tests) | bfloat16
    autocast_bf16: bool = True         # bf16 compute on CUDA: FSDP2's policy when sharded, else autocast
    max_nonfinite_steps: int = 5       # this many non-finite steps in a row stop the run (exit 2)
    tensorboard: bool = True           # RUN/tb/ event files beside metrics.jsonl (diffusion.monitor)
    grad_accum: int = 1                # loader batches per optimizer step (one normaliser over all of them)
    cpu_offload: bool = False          # FSDP2 keeps parameters, gradients and optimizer state on the CPU
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # rank > 0: train adapters only

    def __post_init__(self) -> None:
        _at_least(self, 1, "steps", "log_every", "checkpoint_every", "val_batches", "max_nonfinite_steps",
                  "grad_accum")
        _at_least(self, 0, "val_every", "sample_every", "sample_frames")  # 0 disables
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 disables EMA), got {self.ema_decay}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")


def _at_least(cfg, low: int, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def sample_seed(seed: int, step: int, index: int, stream: str) -> int:
    """A 63-bit seed for one sample of one step; `stream` separates unrelated draws."""
    digest = hashlib.blake2b(f"{seed}:{step}:{index}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class ParallelState:
    """Where this rank sits: its data-parallel slot and the groups it reduces over."""
    dp_rank: int = 0
    dp_size: int = 1
    cp_size: int = 1
    tp_size: int = 1
    cp: object | None = None                    # parallel.attention.ContextParallel, or None
    dp_group: object | None = None              # ranks holding different samples (one per CP x TP group)
    mesh: object | None = None                  # DeviceMesh over every dp x cp rank (FSDP2 shards on it)
    tp_mesh: object | None = None               # the "tp" dim of the same mesh (tensor parallelism)
    layout: object | None = None                # the backbone's parallel.layout.BuiltLayout

    @property
    def grad_group(self):
        return None if self.mesh is None else self.mesh.get_group()

    @property
    def backbone_group(self):
        """Every rank of the model (dp x cp x tp)."""
        return None if self.layout is None else self.layout.group(("tp", "cp", "dp"))


def build_parallel_state(dp: int, cp: int, cp_mode: str = "ulysses", tp: int = 1, cp_ulysses: int = 2,
                         ranks: int | None = None) -> ParallelState:
    """Groups and meshes for dp x cp x tp (parallel.ParallelLayout: tp fastest, then cp, then dp) over the
    first `ranks` ranks of the job (all of them by default; encoder ranks come after).

    Collective over the whole world: every rank calls it, in the same order."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    ranks = world if ranks is None else ranks
    if dp * cp * tp != ranks:
        raise ValueError(f"dp x cp x tp = {dp} x {cp} x {tp} = {dp * cp * tp} but there are {ranks} backbone ranks")
    if world == 1:
        return ParallelState()
    from torch.distributed.device_mesh import DeviceMesh

    from parallel.device import rank_device
    from parallel.layout import ParallelLayout

    layout = ParallelLayout(name="dit", dp=dp, cp=cp, tp=tp, size=ranks,
                            cp_ulysses=cp_ulysses if cp_mode == "usp" else None).build(backend=dist.get_backend())
    device = rank_device().device.type
    grid = torch.arange(ranks).reshape(dp * cp, tp)
    # a mesh over the backbone ranks only (DeviceMesh is collective over the world: every rank builds it)
    mesh2d = DeviceMesh(device, grid, mesh_dim_names=("dp_cp", "tp"))
    if not layout.is_member:
        return ParallelState(layout=layout)
    return ParallelState(dp_rank=layout.rank_in("dp"), dp_size=dp, cp_size=cp, tp_size=tp,
                         cp=layout.context_parallel(cp_mode), dp_group=layout.group("dp"),
                         mesh=mesh2d["dp_cp"], tp_mesh=mesh2d["tp"] if tp > 1 else None, layout=layout)


def mixed_precision(train: TrainConfig, device: torch.device):
    """FSDP2's bf16 policy on CUDA (bf16 parameters and compute, float32 master weights and gradient
    reductions); None elsewhere."""
    if device.type != "cuda" or not train.autocast_bf16 or train.dtype != "float32":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    # inputs are not cast: the timestep, modulation and RoPE tables stay float32 inside the model
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)


def parallelize_for_training(model: nn.Module, train: TrainConfig, par: ParallelState,
                             device: torch.device) -> nn.Module:
    """The model's own plan (diffusion.dit.parallelize), with the trainer's memory settings."""
    from diffusion.dit.parallelize import parallelize_dit

    return parallelize_dit(model, par.mesh, par.cp, mp_policy=mixed_precision(train, device),
                           activation_checkpointing=train.activation_checkpointing or None,
                           cpu_offload=train.cpu_offload, tp_mesh=par.tp_mesh)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reshard(model: nn.Module) -> None:
    """Put FSDP2 parameters back to their sharded DTensor form (a no-grad forward leaves the root
    unsharded), so parameter-wise copies (EMA swap) see shards on every module."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def is_packed(batch: dict) -> bool:
    """A packed batch holds a list of per-sample latents (one sequence in the DiT)."""
    return isinstance(batch["latents"], (list, tuple))


class Trainer:
    """One model, its optimizer, schedule and EMA; `train_step` takes a conditioned latent batch."""

    def __init__(self, model: nn.Module, train: TrainConfig, flow: FlowMatchingConfig, *, total_steps: int,
                 par: ParallelState | None = None, null_text: tuple[torch.Tensor, torch.Tensor] | None = None,
                 device: str | torch.device = "cpu"):
        self.tcfg = train
        self.par = par or ParallelState()
        self.device = torch.device(device)
        self.dtype = DTYPES[self.tcfg.dtype]
        if not is_sharded(model):  # an eagerly built model: place it and apply the plan here
            model.to(self.device, self.dtype)
            model = parallelize_for_training(model, train, self.par, self.device)
        self.mixed_precision = mixed_precision(train, self.device) is not None and self.par.mesh is not None
        self.model = model
        self.objective = FlowMatching(flow)
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad],
                                         self.tcfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.tcfg.optim, total_steps)
        self.ema = EMA(self.model, self.tcfg.ema_decay) if self.tcfg.ema_decay > 0 else None
        self.null_text = null_text

    # -- randomness -------------------------------------------------------------------------------
    def draw(self, step: int, batch_size: int, stream: str = "train", offset: int = 0):
        """Per-sample generators for this rank's slice of the global batch (same on every CP rank);
        `offset` is the global index of this micro-batch's first sample (gradient accumulation)."""
        first = offset + self.par.dp_rank * batch_size
        return [torch.Generator().manual_seed(sample_seed(self.tcfg.seed, step, first + i, stream))
                for i in range(batch_size)]

    def _autocast(self):
        if (self.device.type == "cuda" and self.tcfg.autocast_bf16 and self.dtype == torch.float32
                and not self.mixed_precision):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- loss -------------------------------------------------------------------------------------
    def loss(self, step: int, batch: dict, stream: str = "train", dropout: bool = True, *, offset: int = 0,
             normalizer: torch.Tensor | None = None) -> torch.Tensor:
        """This rank's share of the global-batch loss: sum of its squared errors / global element count
        (`normalizer`, when the global batch spans several micro-batches)."""
        if is_packed(batch):
            return self._packed_loss(step, batch, stream, dropout, offset, normalizer)
        x0 = batch["latents"].to(self.device, self.dtype)
        text = batch["text"].to(self.device, self.dtype)
        text_mask = batch["text_mask"].to(self.device)
        b = x0.shape[0]
        obj = self.objective
        ts, noise, texts, masks = [], [], [], []
        for i, g in enumerate(self.draw(step, b, stream, offset)):
            ts.append(obj.sample_timesteps(1, generator=g))
            noise.append(obj.sample_noise(x0[i:i + 1], generator=g))
            ti, mi = text[i:i + 1], text_mask[i:i + 1]
            if dropout and self.null_text is not None:
                ti, mi, _ = obj.apply_caption_dropout(ti, mi, self.null_text[0], self.null_text[1], generator=g)
            texts.append(ti)
            masks.append(mi)
        t = torch.cat(ts).to(self.device)
        xt, target = obj.noisy(x0, torch.cat(noise), t)
        with self._autocast():
            pred = self.model(xt, t, torch.cat(texts), torch.cat(masks))
        # pad_mask: the loader's "pad" remainder rule repeats samples to fill a batch; repeats weigh 0
        mask = batch.get("pad_mask")
        if mask is not None:
            mask = mask.to(self.device)
        if normalizer is None:
            normalizer = obj.global_normalizer(pred, mask, self.par.dp_group)
        return obj.loss(pred.to(target.dtype), target, mask, normalizer=normalizer, weights=obj.loss_weights(t))

    def _packed_loss(self, step: int, batch: dict, stream: str, dropout: bool, offset: int,
                     normalizer: torch.Tensor | None) -> torch.Tensor:
        """The loss of one packed batch: per-sample draws as in `loss`, one forward over the packed
        sequence, squared errors over the real samples' elements."""
        x0s = [x.to(self.device, self.dtype) for x in batch["latents"]]
        text = batch["text"].to(self.device, self.dtype)
        text_mask = batch["text_mask"].to(self.device)
        obj = self.objective
        ts, xts, targets, texts, masks = [], [], [], [], []
        # packs differ in size between ranks: each data-parallel rank draws from its own stream
        seeds = [sample_seed(self.tcfg.seed, step, offset + i, f"{stream}/dp{self.par.dp_rank}")
                 for i in range(len(x0s))]
        for i, (x0, seed) in enumerate(zip(x0s, seeds)):
            g = torch.Generator().manual_seed(seed)
            t_i = obj.sample_timesteps(1, generator=g)
            noise = obj.sample_noise(x0[None], generator=g)
            ti, mi = text[i:i + 1], text_mask[i:i + 1]
            if dropout and self.null_text is not None:
                ti, mi, _ = obj.apply_caption_dropout(ti, mi, self.null_text[0], self.null_text[1], generator=g)
            xt, target = obj.noisy(x0[None], noise, t_i.to(self.device))
            ts.append(t_i)
            xts.append(xt[0])
            targets.append(target[0])
            texts.append(ti)
            masks.append(mi)
        t = torch.cat(ts).to(self.device)
        with self._autocast():
            preds = self.model(xts, t, torch.cat(texts), torch.cat(masks))
        weights = batch.get("pad_mask")
        if normalizer is None:
            normalizer = self._normalizer([batch])
        return obj.packed_loss([p.to(tg.dtype) for p, tg in zip(preds, targets)], targets, weights, normalizer,
                               loss_weights=obj.loss_weights(t))

    def _normalizer(self, batches: list[dict]) -> torch.Tensor:
        """Loss elements of the whole global batch: every micro-batch of every data-parallel rank."""
        count = torch.zeros((), dtype=torch.float64)
        for batch in batches:
            mask = batch.get("pad_mask")
            if is_packed(batch):
                count += self.objective.packed_element_count(batch["latents"], mask)
            else:
                count += self.objective.element_count(batch["latents"], mask)
        count = count.to(self.device)
        if self.par.dp_group is not None and dist.is_initialized() and dist.get_world_size(self.par.dp_group) > 1:
            dist.all_reduce(count, group=self.par.dp_group)
        return count.to(torch.float64 if self.dtype == torch.float64 else torch.float32)

    def _global_loss(self, local_share: torch.Tensor) -> float:
        """The global-batch loss: sum of dp shares (each CP rank of a group holds the same value)."""
        value = local_share.detach().double().clone()
        if self.par.mesh is not None:
            dist.all_reduce(value, group=self.par.grad_group)
            value /= self.par.cp_size
        return float(value)

    # -- step -------------------------------------------------------------------------------------
    def train_step(self, step: int, batch: dict | list[dict]) -> dict:
        """One optimizer update at 0-based `step` over one batch or a list of micro-batches (gradient
        accumulation: one normaliser over all of them, gradients reduced once after the last);
        grads stay on the params until the next call.

        When the global loss or gradient norm is not finite the update is skipped (no weight, optimizer
        moment or EMA changes; `skipped` is True). Both numbers are reduced over every rank, so all ranks
        decide alike. The LR schedule still advances: it follows the step number."""
        t0 = time.perf_counter()
        batches = batch if isinstance(batch, list) else [batch]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        normalizer = self._normalizer(batches) if len(batches) > 1 else None
        share = torch.zeros((), dtype=torch.float64, device=self.device)
        offset = 0
        for m, micro in enumerate(batches):
            if is_sharded(self.model):
                self.model.set_requires_gradient_sync(m == len(batches) - 1)
            part = self.loss(step, micro, offset=offset, normalizer=normalizer)
            part.backward()
            share += part.detach().double()
            # packed draws count this rank's samples in its own stream; batched ones the global batch
            offset += len(micro["latents"]) * (1 if is_packed(micro) else self.par.dp_size)
        loss = self._global_loss(share)
        grad_norm = clip_grads(self.model.parameters(), self.tcfg.optim.grad_clip, self.par.grad_group)
        lr = self.optimizer.param_groups[0]["lr"]
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        self.scheduler.step()
        dt = time.perf_counter() - t0
        samples, tokens, capacity = self._trained(batches)
        out = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm, "skipped": skipped,
               "samples_per_s": samples / dt, "tokens_per_s": tokens / dt, "step_time_s": dt,
               "samples": samples, "real_tokens": tokens}
        if capacity:
            out["pack_tokens"] = capacity
            out["padding_fraction"] = 1.0 - tokens / capacity
        return out

    def _trained(self, batches: list[dict]) -> tuple[int, int, int]:
        """(real samples, their DiT tokens, packed token capacity) of the global batch; loader repeats
        (pad_mask False) are not counted."""
        patch = getattr(getattr(self.model, "config", None), "patch_volume", 1)
        counts = torch.zeros(3, dtype=torch.float64)
        for b in batches:
            keep = b.get("pad_mask")
            for i, x in enumerate(b["latents"]):
                if keep is None or bool(keep[i]):
                    counts[0] += 1
                    counts[1] += math.prod(x.shape[1:]) // patch  # (C, F, H, W) -> tokens
            counts[2] += int(b.get("pack_tokens") or 0)
        group = self.par.dp_group
        if group is not None and dist.is_initialized() and dist.get_world_size(group) > 1:
            counts = counts.to(self.device)
            dist.all_reduce(counts, group=group)
        return int(counts[0]), int(counts[1]), int(counts[2])

    @torch.no_grad()
    def weights_finite(self) -> bool:
        """Whether every weight (every shard, on every rank) is finite."""
        from parallel.tensor import local

        bad = torch.zeros((), dtype=torch.float64)
        for p in self.model.parameters():
            bad += (~torch.isfinite(local(p))).sum().double().cpu()
        if self.par.backbone_group is not None:
            dist.all_reduce(bad, group=self.par.backbone_group)
        return float(bad) == 0.0

    @torch.no_grad()
    def eval_loss(self, batches: list[dict]) -> float:
        """Mean loss over fixed held-back batches, with fixed noise and no caption dropout."""
        self.model.eval()
        total = 0.0
        for i, batch in enumerate(batches):
            total += self._global_loss(self.loss(i, batch, stream="val", dropout=False))
        self.model.train()
        return total / max(1, len(batches))
