"""AdamW, the warmup + cosine learning-rate schedule and a gradient clip that works on sharded grads.

The clip computes one global norm over every rank that holds a piece of a parameter. A DTensor grad
(FSDP2 over dp x cp, and tensor parallelism over tp) is summed over exactly the mesh dims that shard it:
a dim that replicates it (the TP dim of a replicated layer) would otherwise count it several times.
Plain tensor grads (one process) are counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0      # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0         # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        # every float is already finite (diffusion.config refuses inf and nan); these are the ranges
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.AdamW:
    # foreach: one dispatch per operation for all parameters; per-parameter updates of DTensor shards cost
    # more in dispatch than in arithmetic on small models (31.7 against 10 ms of a ~0.39 s demo step)
    return torch.optim.AdamW(list(params), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, foreach=True)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base LR for the update made at `step` (0-based): linear warmup, then cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio))


def global_grad_norm(params, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """L2 norm of all grads across ranks. DTensor grads are reduced over the mesh dims that shard them
    (`group` is kept for callers that pass the FSDP group; the meshes say more)."""
    buckets: dict[tuple, torch.Tensor] = {}  # the groups sharding a grad -> its local sum of squares
    sq_local = None
    for p in params:
        g = p.grad
        if g is None:
            continue
        if isinstance(g, DTensor):
            part = g.to_local().detach().double().pow(2).sum()
            # every dim that splits it (Shard, and FSDP's _StridedShard, which is_shard() does not report)
            groups = tuple(g.device_mesh.get_group(i) for i, pl in enumerate(g.placements)
                           if not (pl.is_replicate() or pl.is_partial()))
            buckets[groups] = buckets[groups] + part if groups in buckets else part
        else:
            part = g.detach().double().pow(2).sum()
            sq_local = part if sq_local is None else sq_local + part
    total = torch.zeros((), dtype=torch.float64)
    for groups, part in buckets.items():  # the same buckets in the same order on every rank
        if dist.is_initialized():
            for gr in groups:
                dist.all_reduce(part, group=gr)
        total = total + part.cpu()
    if sq_local is not None:
        total = total + sq_local.cpu()
    return total.sqrt()


def clip_grads(params, max_norm: float, group: dist.ProcessGroup | None = None) -> float:
    """Scale grads so their global norm is at most max_norm (no-op for max_norm <= 0); return the norm."""
    params = [p for p in params if p.grad is not None]
    norm = global_grad_norm(params, group)
    if max_norm > 0:
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(coef.to(p.grad.dtype).item() if isinstance(p.grad, DTensor) else coef.to(p.grad.dtype))
    return float(norm)
