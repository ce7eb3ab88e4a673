"""LoRA adapters for VideoDiT: training through `peft`, export in the format diffusers' Wan pipelines load
(`load_lora_weights`), and merging adapters of either format into a model for generation.

Every adapted projection of VideoDiT is one module of diffusers' WanTransformer3DModel (LORA_TARGETS), so
adapters keep their A and B and only change their names between the two.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# our module inside each block -> the diffusers module it is
LORA_TARGETS: dict[str, str] = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.out": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.out": "attn2.to_out.0",
    "mlp.fc1": "ffn.net.0.proj", "mlp.fc2": "ffn.net.2",
}
ADAPTER_NAME = "default"
LORA_FILE = "pytorch_lora_weights.safetensors"
_PEFT_KEY = re.compile(r"^(blocks\.\d+\.[a-z_]+\.[a-z0-9_]+)\.lora_([AB])\.(?:" + ADAPTER_NAME + r"\.)?weight$")


@dataclass
class LoRAConfig:
    """`train.lora`: rank 0 trains every weight; rank > 0 trains adapters only (the base stays frozen)."""

    rank: int = 0
    alpha: float | None = None  # None: alpha = rank (scale 1)
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0 (0 disables LoRA), got {self.rank}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown or not self.targets:
            raise ValueError(f"targets must be some of {', '.join(LORA_TARGETS)}, got {self.targets}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank


def add_adapters(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Wrap the target projections of every block with LoRA (B = 0: the model's output is unchanged) and
    freeze everything else."""
    from peft import LoraConfig, inject_adapter_in_model

    pattern = r"blocks\.\d+\.(" + "|".join(re.escape(t) for t in cfg.targets) + r")"
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
                          lora_dropout=cfg.dropout, target_modules=pattern, bias="none")
    inject_adapter_in_model(peft_cfg, model, adapter_name=ADAPTER_NAME)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    return model


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def base_name(name: str) -> str:
    """A parameter's name in the plain model (peft moves a wrapped Linear's weight to `.base_layer`)."""
    return name.replace(".base_layer.", ".")


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"blocks.i.<module>.lora_A.weight": A, ...lora_B.weight: B} of a model with adapters."""
    out = {}
    for name, p in model.named_parameters():
        m = _PEFT_KEY.match(name)
        if m:
            out[f"{m.group(1)}.lora_{m.group(2)}.weight"] = p.detach()
    return out


def normalize_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft's parameter names ("...qkv.lora_A.default.weight") as "...qkv.lora_A.weight"."""
    out = {}
    for name, t in tensors.items():
        m = _PEFT_KEY.match(name)
        if m:
            out[f"{m.group(1)}.lora_{m.group(2)}.weight"] = t
    return out


def to_diffusers(adapters: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Our adapters -> diffusers WanTransformer3DModel module names (no "transformer." prefix), with the
    scale folded into B so that a reader taking alpha = rank gets the same model."""
    out: dict[str, torch.Tensor] = {}
    for key, t in adapters.items():
        m = _PEFT_KEY.match(key)
        if not m:
            continue
        block, ours = ".".join(m.group(1).split(".", 2)[:2]), m.group(1).split(".", 2)[2]
        value = t * scale if m.group(2) == "B" else t
        out[f"{block}.{LORA_TARGETS[ours]}.lora_{m.group(2)}.weight"] = value.contiguous().clone()
    return out


def save_diffusers_lora(adapters: dict[str, torch.Tensor], rank: int, scale: float, out_dir: str | os.PathLike,
                        targets: list[str]) -> Path:
    """DIR/pytorch_lora_weights.safetensors through diffusers' own Wan LoRA writer (keys "transformer.*",
    peft metadata)."""
    from diffusers import WanPipeline

    layers = to_diffusers(adapters, scale)
    modules = sorted(LORA_TARGETS[ours] for ours in targets)
    meta = {"r": rank, "lora_alpha": rank, "target_modules": modules}
    WanPipeline.save_lora_weights(str(out_dir), transformer_lora_layers=layers, safe_serialization=True,
                                  transformer_lora_adapter_metadata=meta)
    return Path(out_dir) / LORA_FILE


# ------------------------------------------------------------------------------------------ merging


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], float]:
    """(adapters keyed by diffusers module path without prefix, alpha/rank scale) from a diffusers-format
    file or a folder holding one; our own checkpoint adapters come through `adapter_state_dict`."""
    from safetensors import safe_open

    from dataload.files import regular_file_size

    p = Path(path)
    if p.is_dir():
        p = p / LORA_FILE
    regular_file_size(p, "LoRA file")
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    scale = 1.0
    raw = meta.get("lora_adapter_metadata")
    if raw:
        try:
            info = json.loads(raw)
            r = info.get("transformer.r", info.get("r"))
            alpha = info.get("transformer.lora_alpha", info.get("lora_alpha"))
            if r and alpha:
                scale = float(alpha) / float(r)
        except (ValueError, TypeError, AttributeError):
            raise ValueError(f"{p}: unreadable LoRA metadata") from None
    out = {}
    for k, v in tensors.items():
        name = k[len("transformer."):] if k.startswith("transformer.") else k
        out[name.replace(f".{ADAPTER_NAME}.", ".")] = v
    return out, scale


def merge_into(model: nn.Module, adapters: dict[str, torch.Tensor], scale: float) -> int:
    """Add scale * B @ A of every adapter into the plain model's weights; returns the modules changed.
    `adapters` holds diffusers module names (read_lora_file) or ours (adapter_state_dict)."""
    params = dict(model.named_parameters())
    changed = 0
    used: set[str] = set()
    for i in range(len(model.blocks)):  # type: ignore[attr-defined]
        for ours, theirs in LORA_TARGETS.items():
            weight = params.get(f"blocks.{i}.{ours}.weight")
            if weight is None:
                continue
            for name in (ours, theirs):
                a_key, b_key = f"blocks.{i}.{name}.lora_A.weight", f"blocks.{i}.{name}.lora_B.weight"
                if a_key not in adapters and b_key not in adapters:
                    continue
                if a_key not in adapters or b_key not in adapters:
                    raise ValueError(f"LoRA for blocks.{i}.{name} has only one of A and B")
                delta = adapters[b_key].double() @ adapters[a_key].double()
                if delta.shape != weight.shape:
                    raise ValueError(f"LoRA for blocks.{i}.{ours} has shape {tuple(delta.shape)}, the model "
                                     f"{tuple(weight.shape)}")
                with torch.no_grad():
                    weight.add_((scale * delta).to(weight.dtype))
                used |= {a_key, b_key}
                changed += 1
    unused = sorted(set(adapters) - used)
    if unused:
        raise ValueError(f"{len(unused)} adapter tensor(s) match no module of this model, e.g. {unused[0]}")
    return changed
