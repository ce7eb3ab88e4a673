"""Context-parallel attention on sequence-sharded (B, S_local, H, D) tensors.

Modes:
- ``ulysses``: all-to-all scatters heads and gathers the sequence, attention runs on whole sequences
  for H/P heads, and the inverse all-to-all restores the sharding.
- ``ring``: K/V blocks travel around the group; each rank merges its partial results by their
  log-sum-exp. The backward pass recomputes every block against the rotating K/V while the dK/dV
  accumulators travel with the block they belong to and arrive home after a full turn.
- ``usp``: Ulysses inside `ulysses_group` (consecutive cp ranks), ring across `ring_group`.

Sharding convention: cp rank i holds positions [i*S_local, (i+1)*S_local) of the (padded) global
sequence. Padding sits at the end; pass `seq_len` (the unpadded length) or a key `mask` so padded keys
are ignored. Gradients follow the partial convention of this package: a tensor replicated over the cp
group (K/V with ``kv_replicated=True``) gets this rank's contribution only; summing over the cp group
gives the full gradient (as the module's DP x CP gradient reduction does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from parallel.comm import CommStats, group_rank, group_size, ring_shift, ring_shift_start, seq_all_to_all
from parallel.local_attention import (
    attn_block_backward,
    attn_block_forward,
    block_mask,
    fused_backward,
    fused_forward,
    fused_ok,
    local_attention,
    merge,
    segment_bounds,
    varlen_attention,
)

Mode = Literal["ulysses", "ring", "usp"]


@dataclass
class ContextParallel:
    """Which group shards the sequence and how attention crosses it."""

    group: object | None
    mode: Mode = "ulysses"
    ulysses_group: object | None = None  # usp only
    ring_group: object | None = None  # usp only
    heads_fallback: Literal["ring", "error"] = "ring"  # when heads do not divide the Ulysses degree
    stats: CommStats | None = None  # counts the bytes this rank sends, when set

    def __post_init__(self) -> None:
        if self.mode not in ("ulysses", "ring", "usp"):
            raise ValueError(f"unknown context-parallel mode {self.mode!r}; expected ulysses, ring or usp")
        if self.mode == "usp" and (self.ulysses_group is None or self.ring_group is None):
            raise ValueError("usp needs both ulysses_group and ring_group")

    @property
    def size(self) -> int:
        return group_size(self.group)

    @property
    def rank(self) -> int:
        return group_rank(self.group)


def cp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cp: ContextParallel | None, *,
                 kv_replicated: bool = False, mask: torch.Tensor | None = None, scale: float | None = None,
                 causal: bool = False, seq_len: int | None = None,
                 segments: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of this rank's query shard over the whole (sharded or replicated) key sequence.

    q: (B, S_local, H, D). k, v: (B, S_local, H, D), or the full (B, S_kv, H, D) with kv_replicated.
    mask: optional bool key mask (B, L), True = attend, over the global key sequence (unpadded or padded
    length). seq_len: unpadded global length of the sharded sequence (keys at or after it are ignored).
    segments: a packed sequence's (S_global_padded,) segment id per global position (every batch row
    alike; each segment one contiguous run): a query attends only to keys of its own segment, on
    whichever rank they sit, so samples may cross rank boundaries. Give the end padding a segment of its
    own. Packed batches have batch size 1.
    Returns (B, S_local, H, D).
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"cp_attention expects (B, S, H, D) tensors, got {tuple(q.shape)}, {tuple(k.shape)}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        raise ValueError(f"cp_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must agree in "
                         f"batch, heads and head_dim")
    if not kv_replicated and k.shape[1] != q.shape[1]:
        raise ValueError(f"cp_attention: sharded k/v hold {k.shape[1]} tokens but q holds {q.shape[1]}; "
                         f"pass kv_replicated=True for full (cross-attention) keys")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    n = 1 if cp is None else cp.size
    rank = 0 if cp is None else cp.rank
    if kv_replicated:
        if segments is not None:
            raise ValueError("cp_attention: segments apply to a sharded (self-attention) sequence only")
        key_valid = _key_valid(mask, k.shape[0], k.shape[1], None, k.device)
        return local_attention(q, k, v, scale, key_valid, causal, q_offset=rank * q.shape[1])
    total = q.shape[1] * n
    key_valid = _key_valid(mask, q.shape[0], total, seq_len, q.device)
    if segments is not None:
        if segments.dim() != 1 or segments.shape[0] != total:
            raise ValueError(f"segments must be ({total},) ids of the padded global sequence, "
                             f"got {tuple(segments.shape)}")
        segments = segments.to(q.device)
    if n == 1:
        if segments is not None:
            return _whole_sequence(q, k, v, scale, key_valid, causal, segments)
        if key_valid is None:  # fast path: fused SDPA
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=causal, scale=scale)
            return out.transpose(1, 2)
        return local_attention(q, k, v, scale, key_valid, causal)
    mode = cp.mode
    heads = q.shape[2]
    uly = cp.size if mode == "ulysses" else (group_size(cp.ulysses_group) if mode == "usp" else 1)
    if mode != "ring" and heads % uly:
        if cp.heads_fallback == "error":
            raise ValueError(f"{mode}: {heads} heads do not divide over the Ulysses degree {uly}; use ring, "
                             f"or heads_fallback='ring'")
        mode = "ring"
    if mode == "ring":
        return ring_attention(q, k, v, cp.group, scale, key_valid, causal, cp.stats, segments)
    ug = cp.group if mode == "ulysses" else cp.ulysses_group
    qh, kh, vh = (seq_all_to_all(t, ug, scatter_dim=2, gather_dim=1, stats=cp.stats) for t in (q, k, v))
    if mode == "ulysses" or group_size(cp.ring_group) == 1:  # a ring of one is plain local attention
        out = _whole_sequence(qh, kh, vh, scale, key_valid, causal, segments)
    else:
        out = ring_attention(qh, kh, vh, cp.ring_group, scale, key_valid, causal, cp.stats, segments)
    return seq_all_to_all(out, ug, scatter_dim=1, gather_dim=2, stats=cp.stats)


def _whole_sequence(q, k, v, scale, key_valid, causal, segments):
    """Attention over the whole (gathered) sequence. Packed segments alone are contiguous runs: each run
    attends by itself (per-segment SDPA, or the variable-length kernel on CUDA), exactly and without an
    S x S mask; with a key mask or causality too, the masked math runs."""
    if segments is not None and key_valid is None and not causal:
        return varlen_attention(q, k, v, segment_bounds(segments), scale=scale)
    return local_attention(q, k, v, scale, key_valid, causal, segments=segments)


def _key_valid(mask, batch: int, total: int, seq_len: int | None, device) -> torch.Tensor | None:
    """Bool (B, total) key validity from a user mask and the unpadded length; None when all valid."""
    valid = None
    if mask is not None:
        if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] > total:
            raise ValueError(f"mask must be (B={batch}, L<={total}) booleans, got {tuple(mask.shape)}")
        valid = torch.zeros(batch, total, dtype=torch.bool, device=device)
        valid[:, : mask.shape[1]] = mask.to(torch.bool)
    if seq_len is not None and seq_len < total:
        if valid is None:
            valid = torch.ones(batch, total, dtype=torch.bool, device=device)
        valid[:, seq_len:] = False
    return valid


def ring_attention(q, k, v, group, scale: float, key_valid=None, causal: bool = False,
                   stats: CommStats | None = None, segments: torch.Tensor | None = None) -> torch.Tensor:
    """Ring attention over `group`; key_valid is (B, S_local * P) for the whole ring's keys, segments
    (S_local * P,) the packed-sample id of every global position."""
    return _RingAttention.apply(q, k, v, group, scale, key_valid, causal, stats, segments)


def _plain(key_valid, segments) -> bool:
    return key_valid is None and segments is None


def _block_fwd(q, k, v, scale, key_valid, causal, q_block, k_block, segments=None, mask=None):
    """One ring block: the fused kernel when nothing but (diagonal) causality masks it."""
    if _plain(key_valid, segments) and fused_ok(q) and q.shape[1] == k.shape[1]:
        return fused_forward(q, k, v, scale, causal and q_block == k_block)
    if mask is None:
        mask = _ring_block_mask(key_valid, causal, q.shape[1], k.shape[1], q_block, k_block, q.device, segments)
    return attn_block_forward(q, k, v, scale, mask)


def _block_bwd(q, k, v, out, lse, dout, scale, key_valid, causal, q_block, k_block, segments=None, mask=None):
    if _plain(key_valid, segments) and fused_ok(q) and q.shape[1] == k.shape[1]:
        return fused_backward(q, k, v, out, lse, dout, scale, causal and q_block == k_block)
    if mask is None:
        mask = _ring_block_mask(key_valid, causal, q.shape[1], k.shape[1], q_block, k_block, q.device, segments)
    return attn_block_backward(q, k, v, out, lse, dout, scale, mask)


def _ring_block_mask(key_valid, causal, q_len, k_len, q_block, k_block, device, segments=None):
    """The mask of one (query block, key block) pair, from global positions: key validity, causality and
    the packed samples (a sample crossing a rank boundary sees its keys in the neighbour's block)."""
    kv = None if key_valid is None else key_valid[:, k_block * k_len:(k_block + 1) * k_len]
    q_pos = k_pos = None
    if causal:
        q_pos = torch.arange(q_len, device=device) + q_block * q_len
        k_pos = torch.arange(k_len, device=device) + k_block * k_len
    q_seg = k_seg = None
    if segments is not None:
        q_seg = segments[q_block * q_len:(q_block + 1) * q_len]
        k_seg = segments[k_block * k_len:(k_block + 1) * k_len]
    return block_mask(kv, q_pos, k_pos, causal, q_seg, k_seg)


def _block_mask_or_skip(q, k, key_valid, causal, q_block, k_block, segments):
    """(skip, mask): a block in which no query shares a packed sample with any key is skipped."""
    if segments is None:
        return False, None
    mask = _ring_block_mask(key_valid, causal, q.shape[1], k.shape[1], q_block, k_block, q.device, segments)
    return not bool(mask.any()), mask


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group, scale, key_valid, causal, stats, segments):
        n, r = group_size(group), group_rank(group)
        b, s, h, _ = q.shape
        out = torch.zeros_like(q)
        lse = torch.full((b, h, s), float("-inf"), dtype=q.dtype, device=q.device)
        cur = [k.contiguous(), v.contiguous()]
        for step in range(n):
            src = (r - step) % n
            pending = ring_shift_start(cur, group, stats) if step < n - 1 else None
            skip, mask = _block_mask_or_skip(q, cur[0], key_valid, causal, r, src, segments)
            if not (causal and src > r) and not skip:  # a later block is fully masked under causal attention
                o_b, l_b = _block_fwd(q, cur[0], cur[1], scale, key_valid, causal, r, src, segments, mask)
                out, lse = merge(out, lse, o_b, l_b)
            if pending is not None:
                for w in pending[1]:
                    w.wait()
                cur = pending[0]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.group, ctx.scale, ctx.key_valid, ctx.causal, ctx.stats = group, scale, key_valid, causal, stats
        ctx.segments = segments
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        group, scale, key_valid, causal, stats = ctx.group, ctx.scale, ctx.key_valid, ctx.causal, ctx.stats
        segments = ctx.segments
        n, r = group_size(group), group_rank(group)
        dout = dout.contiguous()
        dq = torch.zeros_like(q)
        cur = [k.contiguous(), v.contiguous()]
        acc = [torch.zeros_like(k), torch.zeros_like(v)]  # dK/dV of the block currently held
        for step in range(n):
            src = (r - step) % n
            pending = ring_shift_start(cur, group, stats) if step < n - 1 else None
            skip, mask = _block_mask_or_skip(q, cur[0], key_valid, causal, r, src, segments)
            if not (causal and src > r) and not skip:
                dq_b, dk_b, dv_b = _block_bwd(q, cur[0], cur[1], out, lse, dout, scale, key_valid, causal, r, src,
                                              segments, mask)
                dq += dq_b
                acc[0] = acc[0] + dk_b
                acc[1] = acc[1] + dv_b
            if pending is not None:
                for w in pending[1]:
                    w.wait()
                cur = pending[0]
            if n > 1:  # the accumulator follows its block; after n shifts it is home
                acc = ring_shift(acc, group, stats)
        return dq, acc[0], acc[1], None, None, None, None, None, None
