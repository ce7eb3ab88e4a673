"""Device and dtype choice shared by the model wrappers: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch

from curate.errors import CurateError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CurateError(f"device {name!r} asked for but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CurateError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU (large batches, half the memory), float32 on the CPU (bf16 matmuls are slow)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise CurateError(f"unknown dtype {name!r} (auto, float32, bfloat16, float16)")
    return table[name]
