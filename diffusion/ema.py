"""Exponential moving average of the trained weights.

The shadow copies have the same type and placement as the parameters (DTensor shards under FSDP2), so
updating them is local and they are saved through torch.distributed.checkpoint like the model.
"""

from __future__ import annotations

import torch
from torch import nn

from parallel.tensor import local


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = decay
        # warmup: the effective decay grows as min(decay, (1 + n) / (10 + n)) so early averages are not
        # dominated by the random init
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        # on the local tensors, all at once: a shadow and its parameter are sharded alike, and per-DTensor
        # dispatch cost more than the arithmetic itself on a small model (over a tenth of a demo step)
        shadows, params = [], []
        for name, p in model.named_parameters():
            if name in self.shadow:
                shadows.append(local(self.shadow[name]))
                params.append(local(p.detach()))
        if shadows:
            torch._foreach_lerp_(shadows, params, 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"shadow": dict(self.shadow), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)
        self.num_updates = int(state["num_updates"])
