"""The one device decision of a rank: which device its tensors live on and which backend its process
groups use. Every part of a job (launcher, trainer, encoders, precompute, generation, export) asks
`rank_device()`, so a job never mixes a CUDA model with a CPU text encoder or builds a NCCL group on a
CPU run.

CUDA when present (one GPU per local rank, NCCL), else the CPU with gloo. `VFM_DEVICE=cpu` forces the
CPU on a GPU machine (the small CPU runs of the GPU benchmark, tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

ENV = "VFM_DEVICE"


@dataclass(frozen=True)
class RankDevice:
    device: torch.device
    backend: str  # "nccl" | "gloo"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def use_cuda() -> bool:
    """Whether this job runs on CUDA (the same answer on every rank of a machine)."""
    wanted = os.environ.get(ENV, "auto").strip().lower()
    if wanted not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{ENV} must be auto, cpu or cuda, got {wanted!r}")
    if wanted == "cpu":
        return False
    available = torch.cuda.is_available()
    if wanted == "cuda" and not available:
        raise ValueError(f"{ENV}=cuda, but no CUDA device is available")
    return available


def backend() -> str:
    return "nccl" if use_cuda() else "gloo"


def rank_device(local_rank: int | None = None) -> RankDevice:
    """This rank's device: GPU `local_rank % count` (LOCAL_RANK when not given) on CUDA, else the CPU.
    Selecting the GPU also makes it current, so libraries that use "the current device" agree."""
    if not use_cuda():
        return RankDevice(torch.device("cpu"), "gloo")
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return RankDevice(device, "nccl")


__all__ = ["ENV", "RankDevice", "backend", "rank_device", "use_cuda"]
