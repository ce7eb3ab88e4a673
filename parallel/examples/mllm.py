"""A tiny multimodal LLM (vision encoder + projector -> causal LM) trained through the hetero core.

The encoder embeds image patches (context-parallel over its own cp group when it has one) and projects
them to the LM width; the LM reads [image tokens, text tokens] causally and predicts each text token
from the position before it. Per-token cross-entropy is weighted by an uneven per-sample loss mask; the
same mask is the LM's key-padding mask. `reference_loss_sum` runs the same models in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from parallel.attention import ContextParallel, cp_attention
from parallel.layout import BuiltLayout
from parallel.sequence import gather_sequence, shard_sequence


@dataclass(frozen=True)
class MLLMConfig:
    patch_dim: int = 12
    patches: int = 4
    d_enc: int = 16
    d_lm: int = 16
    heads: int = 2
    vocab: int = 11
    text_len: int = 5
    enc_layers: int = 1
    lm_layers: int = 1
    mlp_ratio: int = 2

    @property
    def seq_len(self) -> int:
        return self.patches + self.text_len


def tiny() -> MLLMConfig:
    """Test size: a few hundred parameters per module, float64-friendly."""
    return MLLMConfig()


def bench() -> MLLMConfig:
    """Benchmark size: a vision encoder much heavier than the LM, as in real MLLMs."""
    return MLLMConfig(patch_dim=48, patches=64, d_enc=128, d_lm=64, heads=4, vocab=64, text_len=32,
                      enc_layers=4, lm_layers=2)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, x, cp: ContextParallel | None, causal: bool, seq_len: int, mask=None):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        a = cp_attention(q, k, v, cp, causal=causal, seq_len=seq_len, mask=mask)
        x = x + self.proj(a.reshape(b, s, d))
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: MLLMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.patch_dim, cfg.d_enc)
        self.pos = nn.Parameter(torch.randn(cfg.patches, cfg.d_enc) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.d_enc, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.enc_layers))
        self.norm = nn.LayerNorm(cfg.d_enc)
        self.projector = nn.Sequential(nn.Linear(cfg.d_enc, cfg.d_lm), nn.GELU(), nn.Linear(cfg.d_lm, cfg.d_lm))

    def forward(self, patches: torch.Tensor, cp: ContextParallel | None = None) -> torch.Tensor:
        n = patches.shape[1]
        x = self.embed(patches) + self.pos[:n]
        group = None if cp is None else cp.group
        if cp is not None:
            x = shard_sequence(x, 1, group)
        for blk in self.blocks:
            x = blk(x, cp, causal=False, seq_len=n)
        if cp is not None:
            x = gather_sequence(x, 1, group, orig_len=n)  # the projector sees every patch
        return self.projector(self.norm(x))


class TinyLM(nn.Module):
    def __init__(self, cfg: MLLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_lm)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.d_lm) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.d_lm, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.lm_layers))
        self.norm = nn.LayerNorm(cfg.d_lm)
        self.head = nn.Linear(cfg.d_lm, cfg.vocab)

    def loss_sum(self, image_tokens, text, text_valid, cp: ContextParallel | None = None) -> torch.Tensor:
        """Sum of this rank's per-token losses (its sequence shard under cp)."""
        x, labels, weight, key_valid = lm_inputs(self, image_tokens, text, text_valid)
        n = x.shape[1]
        if cp is not None:
            x, labels, weight = (shard_sequence(t, 1, cp.group) for t in (x, labels, weight))
        for blk in self.blocks:
            x = blk(x, cp, causal=True, seq_len=n, mask=key_valid)
        logits = self.head(self.norm(x))
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
        return (ce * weight.reshape(-1)).sum()


def lm_inputs(lm: TinyLM, image_tokens, text, text_valid):
    """Embedded sequence, next-token labels, loss weights (uneven per sample) and key validity."""
    b, p, t = image_tokens.shape[0], image_tokens.shape[1], text.shape[1]
    x = torch.cat([image_tokens, lm.tok(text)], dim=1) + lm.pos[: p + t]
    labels = torch.zeros(b, p + t, dtype=torch.long)
    weight = torch.zeros(b, p + t, dtype=x.dtype)
    labels[:, p - 1:p - 1 + t] = text  # position p-1+i predicts text token i
    weight[:, p - 1:p - 1 + t] = text_valid.to(x.dtype)
    key_valid = torch.cat([torch.ones(b, p, dtype=torch.bool), text_valid], dim=1)
    return x, labels, weight, key_valid


def loss_weights(cfg: MLLMConfig, text_valid: torch.Tensor) -> torch.Tensor:
    weight = torch.zeros(text_valid.shape[0], cfg.seq_len)
    weight[:, cfg.patches - 1:cfg.patches - 1 + cfg.text_len] = text_valid.float()
    return weight


def make_batch(cfg: MLLMConfig, batch: int, seed: int, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """One global microbatch with uneven valid text lengths (>= 1 per sample)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, cfg.text_len + 1, (batch,), generator=g)
    return {
        "patches": torch.randn(batch, cfg.patches, cfg.patch_dim, generator=g, dtype=dtype),
        "text": torch.randint(0, cfg.vocab, (batch, cfg.text_len), generator=g),
        "text_valid": torch.arange(cfg.text_len)[None, :] < lens[:, None],
    }


def slot(batch: dict[str, torch.Tensor], index: int, count: int) -> dict[str, torch.Tensor]:
    """Data-parallel slot `index` of `count`: a contiguous block of samples."""
    n = next(iter(batch.values())).shape[0]
    if n % count:
        raise ValueError(f"batch {n} does not divide over {count} data-parallel slots")
    per = n // count
    return {k: v[index * per:(index + 1) * per] for k, v in batch.items()}


@dataclass
class MLLMTask:
    """The three callables `HeteroSchedule.step` needs, for this model and chosen CP modes."""

    cfg: MLLMConfig
    enc_mode: str = "ring"
    lm_mode: str = "ring"

    def encode(self, model: VisionEncoder, mb, layout: BuiltLayout) -> torch.Tensor:
        c = layout.coords()
        part = slot(mb, c["dp"], layout.layout.dp)
        return model(part["patches"], layout.context_parallel(self.enc_mode))

    def loss(self, model: TinyLM, image_tokens, mb, layout: BuiltLayout) -> torch.Tensor:
        part = slot(mb, layout.coords()["dp"], layout.layout.dp)
        return model.loss_sum(image_tokens, part["text"], part["text_valid"], layout.context_parallel(self.lm_mode))

    def count_tokens(self, mb, layout: BuiltLayout) -> int:
        part = slot(mb, layout.coords()["dp"], layout.layout.dp)
        w = loss_weights(self.cfg, part["text_valid"])
        cp = layout.context_parallel(self.lm_mode)
        if cp is not None:  # only this rank's sequence shard counts
            w = shard_sequence(w, 1, cp.group)
        return int(w.sum().item())


def reference_loss_sum(enc: VisionEncoder, lm: TinyLM, mb) -> torch.Tensor:
    """The same computation in one process: every sample, whole sequences."""
    return lm.loss_sum(enc(mb["patches"]), mb["text"], mb["text_valid"])


def build_models(cfg: MLLMConfig, seed: int = 0, dtype=torch.float64) -> tuple[VisionEncoder, TinyLM]:
    torch.manual_seed(seed)
    return VisionEncoder(cfg).to(dtype), TinyLM(cfg).to(dtype)
