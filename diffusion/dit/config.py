"""DiT configuration and the named presets (Wan2.1 sizes and a tiny CPU one)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DiTConfig:
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    rope_max_seq_len: int = 1024
    rope_theta: float = 10000.0
    # Wan was trained with zero-padded text and no key mask in cross-attention; True masks padded keys too.
    text_attention_mask: bool = False
    activation_checkpointing: bool = False
    # What the network's output means. "velocity": noise - x0 (Wan; what the objective and samplers take).
    # "sample": the clean latents x0, which forward turns into the velocity (x_t - x0) / max(sigma,
    # sample_min_sigma). A pixel-space patch wider than `dim` cannot carry the noise a velocity holds
    # through the model's width, the clean sample it can (x-prediction: Li & He, "Back to Basics", 2025).
    prediction: str = "velocity"
    sample_min_sigma: float = 0.05
    # True: the masked mean of the text embeddings, projected to `dim`, joins the timestep embedding, so
    # every block's modulation sees the prompt (the pooled text of PixArt and SD3; Wan has none). Trained
    # from scratch on few samples, a model learns global attributes (colour, direction) this way long
    # before cross-attention alone singles out the words that carry them.
    pooled_text: bool = False
    # True: a learned embedding of each token's frame, row and column index (up to rope_max_seq_len each),
    # added to the patch tokens. RoPE only tells a token where the others are relative to it, so from
    # pure noise the model cannot tell where in the frame it is: "the object starts on the left" cannot be
    # drawn. Large models learn placement from borders and data; a tiny one trained in minutes needs this
    # (Wan has none, so such a model does not export to diffusers).
    abs_pos_embed: bool = False

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be 3 positive entries (t, h, w), got {self.patch_size}")
        for name in ("in_channels", "out_channels", "dim", "ffn_dim", "num_heads", "num_layers", "text_dim",
                     "freq_dim", "rope_max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.eps > 0 and self.rope_theta > 0):
            raise ValueError("eps and rope_theta must be positive")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim {self.head_dim} must be even and at least 6 for 3D RoPE")
        if not self.qk_norm:
            raise ValueError("qk_norm=False is not supported: Wan2.1 always RMS-normalises Q and K")
        if self.prediction not in ("velocity", "sample"):
            raise ValueError(f"prediction must be 'velocity' or 'sample', got {self.prediction!r}")
        if not 0 < self.sample_min_sigma <= 1:
            raise ValueError(f"sample_min_sigma must be in (0, 1], got {self.sample_min_sigma}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)


def tiny_dit() -> DiTConfig:
    """A DiT that trains in CPU minutes; in_channels=12 matches the pixel VAE with space-to-depth 2."""
    return DiTConfig(in_channels=12, out_channels=12, dim=64, ffn_dim=256, num_heads=4, num_layers=2,
                     text_dim=64, freq_dim=64, rope_max_seq_len=256)


def wan_1_3b_dit() -> DiTConfig:
    """Wan2.1 T2V 1.3B."""
    return DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, text_dim=4096)


def wan_14b_dit() -> DiTConfig:
    """Wan2.1 T2V 14B."""
    return DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096)


PRESETS = {"tiny": tiny_dit, "wan-1.3b": wan_1_3b_dit, "wan-14b": wan_14b_dit}
