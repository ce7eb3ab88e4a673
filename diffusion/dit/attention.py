"""Self- and cross-attention of a Wan2.1 block; every attention call goes through `attend`.

`attend` is the one place that chooses the kernel: plain SDPA on one rank, `parallel.attention.cp_attention`
when a context-parallel group is set (the sequence is sharded; text K/V are replicated on every rank).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.dit.rope import apply_rope
from parallel.attention import cp_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cp=None, *, key_mask: torch.Tensor | None = None,
           seq_len: int | None = None) -> torch.Tensor:
    """q (B, Sq, H, D), k/v (B, Sk, H, D) -> (B, Sq, H, D). key_mask (B, Sk) bool: True = attend.

    With `cp`, q/k/v are this rank's shards of a sequence of `seq_len` tokens (padded at the end to a
    multiple of the group; padded keys are ignored).
    """
    if cp is not None:
        return cp_attention(q, k, v, cp, mask=key_mask, seq_len=seq_len)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)


class SelfAttention(nn.Module):
    """Fused QKV projection, RMSNorm over all heads on Q and K, 3D RoPE."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cp=None,
                seq_len: int | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = apply_rope(self.norm_q(q).unflatten(-1, (self.num_heads, -1)), cos, sin)
        k = apply_rope(self.norm_k(k).unflatten(-1, (self.num_heads, -1)), cos, sin)
        # contiguous V (a view of the fused projection otherwise) makes the attention kernels faster
        v = v.unflatten(-1, (self.num_heads, -1)).contiguous()
        o = attend(q, k, v, cp, seq_len=seq_len).flatten(2).type_as(x)
        return self.out(o)


class CrossAttention(nn.Module):
    """Video queries attend to the (replicated) text tokens; K and V are one fused projection."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        k, v = self.kv(text).chunk(2, dim=-1)
        k = self.norm_k(k).unflatten(-1, (self.num_heads, -1))
        v = v.unflatten(-1, (self.num_heads, -1))
        # queries are this rank's tokens and K/V the whole (replicated) text: the attention is local,
        # so no context-parallel communication is needed here
        o = attend(q, k, v, None, key_mask=text_mask).flatten(2).type_as(x)
        return self.out(o)
