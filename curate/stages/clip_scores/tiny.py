"""Tiny randomly initialised CLIP models and aesthetic heads of the real classes, saved to a folder and
loaded back through the real loading code. Tests, the demo and the benchmark use them because nothing may
download here; with ``real_size=True`` the same builders give real-size shapes (random weights) for GPU
throughput runs."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def save_tiny_clip(path: str | Path, *, seed: int = 0, real_size: bool = False) -> Path:
    """Save a randomly initialised ``CLIPModel`` (+ image processor) to ``path``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = Path(path)
    if real_size:  # ViT-L/14 shapes
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=224, patch_size=14)
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        proj, size = 768, 224
    else:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=32, patch_size=8)
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        proj, size = 16, 32
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=proj))
    model.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(path)
    return path


def save_aesthetic_head(path: str | Path, in_dim: int, *, hidden: tuple[int, ...] = (16,), seed: int = 0,
                        activation: str = "relu") -> Path:
    """Save a random MLP head (``layers.{i}.weight/bias``) as safetensors, the format ``AestheticScorer`` reads."""
    gen = torch.Generator().manual_seed(seed)
    dims = [in_dim, *hidden, 1]
    tensors = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        tensors[f"layers.{i}.weight"] = torch.randn(b, a, generator=gen) / a**0.5
        tensors[f"layers.{i}.bias"] = torch.randn(b, generator=gen) * 0.1
    path = Path(path)
    save_file(tensors, str(path), metadata={"activation": activation})
    return path
