"""Config sections `models.clip`, `models.aesthetic` and `models.embedding` (off by default: the default
run needs no weights). Every model loads from a local folder or a hub id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from curate.typed_config import Range


@dataclass
class ClipModelConfig:
    """The CLIP image model shared by the aesthetic score and the clip embedding (one forward pass)."""

    model: str = "openai/clip-vit-large-patch14"  # local folder or hub id
    frames: Annotated[int, Range(1, 256)] = 4  # frames sampled evenly per clip
    batch_size: Annotated[int, Range(1, 65536)] = 64  # frames per forward pass
    device: str = "auto"  # auto: cuda when present, else cpu
    dtype: str = "auto"  # auto: bf16 on cuda, float32 on cpu
    tasks_per_batch: Annotated[int, Range(1, 1024)] = 4  # sources the executor hands one worker at once (GPU actors: more)


@dataclass
class AestheticConfig:
    enabled: bool = False
    head: str = ""  # safetensors file: layers.{i}.weight/bias (a linear or MLP head over CLIP embeddings)
    reduce: Literal["mean", "min"] = "mean"  # over the sampled frames
    threshold: float = 4.5  # below it: reject_reason low_aesthetic


@dataclass
class EmbeddingConfig:
    enabled: bool = False  # mean of the L2-normalised CLIP frame embeddings, renormalised -> `embedding`
