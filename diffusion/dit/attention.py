"""Self- and cross-attention of a Wan2.1 block; every attention call goes through `attend`.

`attend` is the one place that chooses the kernel: plain SDPA on one rank, `parallel.attention.cp_attention`
when a context-parallel group is set (the sequence is sharded; text K/V are replicated on every rank).
A packed sequence (`pack`, diffusion/dit/packing.py) attends block-diagonally: by segment on one rank
(`parallel.local_attention.varlen_attention`), by the global segment ids under context parallelism; its
cross-attention runs per contiguous run of one sample against that sample's text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.dit.rope import apply_rope
from parallel.attention import cp_attention
from parallel.local_attention import varlen_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cp=None, *, key_mask: torch.Tensor | None = None,
           seq_len: int | None = None, pack=None) -> torch.Tensor:
    """q (B, Sq, H, D), k/v (B, Sk, H, D) -> (B, Sq, H, D). key_mask (B, Sk) bool: True = attend.

    With `cp`, q/k/v are this rank's shards of a sequence of `seq_len` tokens (padded at the end to a
    multiple of the group; padded keys are ignored). With `pack` (self-attention of a packed sequence)
    a token attends to its own sample's tokens only.
    """
    if pack is not None:
        if cp is not None:
            return cp_attention(q, k, v, cp, segments=pack.segments)
        return varlen_attention(q, k, v, pack.cu_seqlens)
    if cp is not None:
        return cp_attention(q, k, v, cp, mask=key_mask, seq_len=seq_len)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)


class HeadsRMSNorm(nn.RMSNorm):
    """RMSNorm over all heads' channels (Wan normalises Q and K across heads). Under tensor parallelism a
    rank holds some heads: their sum of squares is summed over the TP group first (`tp_group`)."""

    def __init__(self, dim: int, eps: float):
        super().__init__(dim, eps=eps)
        self.tp_group = None
        self.full_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_group is None:
            return super().forward(x)
        from parallel.tensor import all_reduce_sum, local

        work = x if x.dtype == torch.float64 else x.float()
        mean_sq = all_reduce_sum(work.square().sum(-1, keepdim=True), self.tp_group) / self.full_dim
        out = work * torch.rsqrt(mean_sq + self.eps)
        return (out * local(self.weight).to(out.dtype)).type_as(x)


class SelfAttention(nn.Module):
    """Q, K, V projections (one module each: tensor parallelism splits each by heads), RMSNorm over all
    heads on Q and K, 3D RoPE."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm_q = HeadsRMSNorm(dim, eps)
        self.norm_k = HeadsRMSNorm(dim, eps)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cp=None,
                seq_len: int | None = None, pack=None) -> torch.Tensor:
        # with tensor parallelism the projections hold this rank's heads only: -1 keeps the head size
        head = x.shape[-1] // self.num_heads
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, (-1, head)), cos, sin)
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, (-1, head)), cos, sin)
        v = self.v(x).unflatten(-1, (-1, head))
        o = attend(q, k, v, cp, seq_len=seq_len, pack=pack).flatten(2).type_as(x)
        return self.out(o)


class CrossAttention(nn.Module):
    """Video queries attend to the (replicated) text tokens; K and V are one fused projection."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm_q = HeadsRMSNorm(dim, eps)
        self.norm_k = HeadsRMSNorm(dim, eps)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor | None = None, pack=None) -> torch.Tensor:
        head = x.shape[-1] // self.num_heads
        q = self.norm_q(self.q(x)).unflatten(-1, (-1, head))
        k = self.norm_k(self.k(text)).unflatten(-1, (-1, head))
        v = self.v(text).unflatten(-1, (-1, head))
        # queries are this rank's tokens and K/V the whole (replicated) text: the attention is local,
        # so no context-parallel communication is needed here
        if pack is None:
            o = attend(q, k, v, None, key_mask=text_mask)
        else:
            o = _packed_cross(q, k, v, text_mask, pack)
        return self.out(o.flatten(2).type_as(x))


def _packed_cross(q, k, v, text_mask, pack) -> torch.Tensor:
    """Each run of one sample's tokens (1, n, H, D) attends to that sample's text (k/v row); the end
    padding of a context-parallel shard gets zeros."""
    parts, at = [], 0
    for start, end, i in pack.runs:
        if start > at:
            parts.append(q.new_zeros((1, start - at, *q.shape[2:])))
        mask = None if text_mask is None else text_mask[i:i + 1]
        parts.append(attend(q[:, start:end], k[i:i + 1], v[i:i + 1], None, key_mask=mask))
        at = end
    if at < q.shape[1]:
        parts.append(q.new_zeros((1, q.shape[1] - at, *q.shape[2:])))
    return torch.cat(parts, dim=1)
