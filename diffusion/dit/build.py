"""Build the DiT of a training job without any rank holding the whole model.

Order: build on the meta device (no memory), add LoRA adapters when asked, cast to the training dtype,
apply the model's parallel plan (FSDP2 shards the meta parameters), allocate each rank's shards on its
device (`to_empty`), then write the weights shard by shard from a source (diffusion.dit.weights): a
seeded initialisation, or a pretrained folder read through safetensors slices. A checkpoint of ours
is loaded afterwards by DCP, which also reads only each rank's shards.
"""

from __future__ import annotations

import torch
from torch import nn

from diffusion.dit.config import DiTConfig
from diffusion.dit.model import VideoDiT
from diffusion.dit.weights import SeededInit, fill
from diffusion.lora import LoRAConfig, add_adapters, base_name, is_adapter


class BaseWithAdapters:
    """Weights for a model with LoRA: the base from a pretrained folder, the adapters from a seeded init
    (A random, B zero: the adapted model starts equal to the base)."""

    def __init__(self, base, adapters: SeededInit):
        self.base, self.adapters = base, adapters

    def read(self, name: str, index):
        return self.adapters.read(name, index) if is_adapter(name) else self.base.read(base_name(name), index)


def build_dit(config: DiTConfig, *, device: torch.device, dtype: torch.dtype, seed: int,
              parallelize=None, lora: LoRAConfig | None = None, weights=None) -> nn.Module:
    """A materialised (and, with `parallelize`, sharded) VideoDiT.

    parallelize: a function(model) -> model applying the plan (None: one process). weights: a source
    with `read(name, index)` for the base model (None: the seeded initialisation)."""
    with torch.device("meta"):
        model = VideoDiT(config)
        if lora is not None and lora.enabled:
            add_adapters(model, lora)
    model.to(dtype)
    if parallelize is not None:
        model = parallelize(model)
    model.to_empty(device=device)
    init = SeededInit(model, seed)  # adapters included; a wrapped base is seeded as the plain model
    if weights is None:
        source = init
    elif lora is not None and lora.enabled:
        source = BaseWithAdapters(weights, init)
    else:
        source = weights
    fill(model, source)
    if hasattr(weights, "close"):
        weights.close()
    return model
