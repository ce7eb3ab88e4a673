"""Device and dtype choice shared by the model stages: CUDA when present, the CPU otherwise. torch is
imported by the functions that return its objects, not by this module: `gpus_for` runs in the driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from curate.common.cuda import cuda_present
from curate.errors import CurateError

if TYPE_CHECKING:
    import torch


def gpus_for(device: str) -> float:
    """GPUs a worker of a model stage takes: one when the stage will run on CUDA (device auto or cuda, and a
    GPU present), none on the CPU."""
    return 1.0 if device != "cpu" and cuda_present() else 0.0


def pick_device(name: str) -> torch.device:
    import torch

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
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise CurateError(f"unknown dtype {name!r} (auto, float32, bfloat16, float16)")
    return table[name]
