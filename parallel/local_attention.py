"""Blockwise attention math in plain torch: runs in float64 and exposes the log-sum-exp.

Layout is (B, S, H, D) for q/k/v and (B, H, Sq) for the LSE. Masks are boolean "may attend" over
(B, Sq, Sk) or broadcastable; a query row with no allowed key gets output 0 and LSE -inf.
"""

from __future__ import annotations

import torch


def block_mask(key_valid: torch.Tensor | None, q_pos: torch.Tensor | None, k_pos: torch.Tensor | None,
               causal: bool, q_seg: torch.Tensor | None = None,
               k_seg: torch.Tensor | None = None) -> torch.Tensor | None:
    """Boolean (B|1, Sq|1, Sk) mask from a key-validity (B, Sk), global positions (for causal) and the
    segment (packed sample) of each query and key: a query attends only to keys of its own segment."""
    m = None
    if key_valid is not None:
        m = key_valid[:, None, :]
    if causal:
        c = (k_pos[None, None, :] <= q_pos[None, :, None])
        m = c if m is None else (m & c)
    if q_seg is not None:
        s = q_seg[None, :, None] == k_seg[None, None, :]
        m = s if m is None else (m & s)
    return m


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: list[int],
                     scale: float | None = None) -> torch.Tensor:
    """Block-diagonal attention over a packed (1, S, H, D) sequence: positions [cu[i], cu[i+1]) attend
    among themselves only. On CUDA (half precision) torch's variable-length flash kernel runs it in one
    call; elsewhere each segment goes through SDPA on its own slice, which equals running the samples
    one by one and never builds an S x S mask."""
    if q.shape[0] != 1:
        raise ValueError(f"a packed sequence has batch size 1, got {tuple(q.shape)}")
    if _varlen_kernel_ok(q):
        from torch.nn.attention.varlen import varlen_attn

        cu = torch.tensor(cu_seqlens, dtype=torch.int32, device=q.device)
        longest = max(b - a for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:]))
        out = varlen_attn(q[0], k[0], v[0], cu, cu, longest, longest, scale=scale)
        return out[None]
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    parts = []
    for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:]):
        o = torch.nn.functional.scaled_dot_product_attention(t(q[:, a:b]), t(k[:, a:b]), t(v[:, a:b]), scale=scale)
        parts.append(t(o))
    if cu_seqlens[-1] < q.shape[1]:  # trailing positions outside every segment attend nothing
        parts.append(torch.zeros_like(q[:, cu_seqlens[-1]:]))
    return torch.cat(parts, dim=1)


def segment_bounds(segments: torch.Tensor) -> list[int]:
    """Offsets [0, ..., S] of the runs of equal ids in a (S,) segment-id tensor (a packed sequence's
    samples, then its end padding)."""
    change = (segments[1:] != segments[:-1]).nonzero().flatten() + 1
    return [0, *change.tolist(), int(segments.numel())]


def _varlen_kernel_ok(q: torch.Tensor) -> bool:
    """The guard of the fused variable-length kernel: CUDA, half precision, flash-sized heads."""
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if q.shape[-1] % 8 or q.shape[-1] > 256:
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


# The one place that picks the fused kernel (a kernel that also returns the log-sum-exp, so ring and USP
# can merge blocks): torch's flash kernel on the CPU, its memory-efficient kernel on CUDA (any float dtype,
# head dims up to 256). Everything else runs the math below, which stays the reference.
_CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def fused_ok(q: torch.Tensor) -> bool:
    """Whether a fused kernel that returns the LSE can run this block."""
    if q.device.type == "cpu":
        return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
    if q.device.type == "cuda":
        return q.dtype in _CUDA_DTYPES and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0
    return False


def fused_forward(q, k, v, scale: float, causal: bool = False):
    """Unmasked (or square-causal) block through the fused kernel: same (out, lse) as the math below."""
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    if q.device.type == "cuda":
        out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
            t(q), t(k), t(v), None, True, 0.0, causal, scale=scale)
        return t(out), lse[..., :q.shape[1]].float()  # the kernel may pad the LSE's length
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        t(q), t(k), t(v), 0.0, causal, attn_mask=None, scale=scale)
    return t(out), lse


def fused_backward(q, k, v, out, lse, dout, scale: float, causal: bool = False):
    """Gradients of one block given the final output and LSE of its queries (flash-style)."""
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    if q.device.type == "cuda":
        none = torch.empty(0, dtype=torch.int64, device=q.device)  # philox state: unused without dropout
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            t(dout).contiguous(), t(q), t(k), t(v), None, t(out), lse.contiguous(), none, none, 0.0,
            [True, True, True, False], causal, scale=scale)
        return t(dq), t(dk), t(dv)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        t(dout).contiguous(), t(q), t(k), t(v), t(out), lse.contiguous(), 0.0, causal, attn_mask=None, scale=scale)
    return t(dq), t(dk), t(dv)


def _scores(q, k, scale, mask):
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if mask is not None:
        s = s.masked_fill(~mask[:, None], float("-inf"))
    return s


# bound on score-matrix elements held at once: long sequences are processed in query chunks
SCORE_CHUNK = 1 << 22


def _query_chunks(q, k):
    b, sq, h, _ = q.shape
    step = max(1, SCORE_CHUNK // max(1, b * h * k.shape[1]))
    return [(i, min(i + step, sq)) for i in range(0, sq, step)]


def _rows(mask, i, j):
    return None if mask is None else (mask if mask.shape[1] == 1 else mask[:, i:j])


def attn_block_forward(q, k, v, scale: float, mask=None):
    """One block's partial attention: (out (B,Sq,H,D), lse (B,H,Sq))."""
    chunks = _query_chunks(q, k)
    if len(chunks) > 1:
        parts = [attn_block_forward(q[:, i:j], k, v, scale, _rows(mask, i, j)) for i, j in chunks]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=2)
    s = _scores(q, k, scale, mask)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all-masked rows stay finite
    p = torch.exp(s - m)
    l_sum = p.sum(dim=-1, keepdim=True)
    out = torch.einsum("bhqk,bkhd->bqhd", p / l_sum.clamp_min(torch.finfo(p.dtype).tiny), v)
    lse = (m + torch.log(l_sum)).squeeze(-1)  # -inf where nothing was allowed
    return out, lse


def merge(out, lse, out_b, lse_b):
    """Merge two partial results of the same queries over disjoint key sets by their LSE."""
    new = torch.logaddexp(lse, lse_b)
    safe = torch.where(torch.isfinite(new), new, torch.zeros_like(new))
    w_a = torch.exp(lse - safe).transpose(1, 2).unsqueeze(-1)  # (B,Sq,H,1)
    w_b = torch.exp(lse_b - safe).transpose(1, 2).unsqueeze(-1)
    return out * w_a + out_b * w_b, new


def attn_block_backward(q, k, v, out, lse, dout, scale: float, mask=None):
    """Gradients of one key block given the *final* output and LSE of these queries (flash-style)."""
    chunks = _query_chunks(q, k)
    if len(chunks) > 1:
        dq = torch.empty_like(q)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        for i, j in chunks:
            dq_c, dk_c, dv_c = attn_block_backward(q[:, i:j], k, v, out[:, i:j], lse[:, :, i:j], dout[:, i:j],
                                                   scale, _rows(mask, i, j))
            dq[:, i:j] = dq_c
            dk += dk_c
            dv += dv_c
        return dq, dk, dv
    s = _scores(q, k, scale, mask)
    safe = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))
    p = torch.exp(s - safe.unsqueeze(-1))  # exact softmax probabilities for this block
    dv = torch.einsum("bhqk,bqhd->bkhd", p, dout)
    dp = torch.einsum("bqhd,bkhd->bhqk", dout, v)
    delta = (dout * out).sum(-1).transpose(1, 2).unsqueeze(-1)  # (B,H,Sq,1)
    ds = p * (dp - delta) * scale
    dq = torch.einsum("bhqk,bkhd->bqhd", ds, k)
    dk = torch.einsum("bhqk,bqhd->bkhd", ds, q)
    return dq, dk, dv


class LocalAttention(torch.autograd.Function):
    """Attention over full keys with the block math above (used for Ulysses and as the reference).

    `fused_causal` is None for the own-math path (any mask) or the causal flag for the fused kernel.
    """

    @staticmethod
    def forward(ctx, q, k, v, scale, mask, fused_causal):
        if fused_causal is None:
            out, lse = attn_block_forward(q, k, v, scale, mask)
        else:
            out, lse = fused_forward(q, k, v, scale, fused_causal)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale, ctx.mask, ctx.fused_causal = scale, mask, fused_causal
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        if ctx.fused_causal is None:
            dq, dk, dv = attn_block_backward(q, k, v, out, lse, dout.contiguous(), ctx.scale, ctx.mask)
        else:
            dq, dk, dv = fused_backward(q, k, v, out, lse, dout, ctx.scale, ctx.fused_causal)
        return dq, dk, dv, None, None, None


def local_attention(q, k, v, scale: float, key_valid=None, causal: bool = False, q_offset: int = 0,
                    segments: torch.Tensor | None = None):
    """Attention of q over all of k/v; `q_offset` is q's first global position (causal only).
    segments: (Sk,) segment id of every key position, q being positions [q_offset, q_offset + Sq)."""
    if key_valid is None and segments is None and fused_ok(q) and (
            not causal or (q_offset == 0 and q.shape[1] == k.shape[1])):
        return LocalAttention.apply(q, k, v, scale, None, causal)
    q_pos = k_pos = None
    if causal:
        q_pos = torch.arange(q.shape[1], device=q.device) + q_offset
        k_pos = torch.arange(k.shape[1], device=q.device)
    q_seg = None if segments is None else segments[q_offset:q_offset + q.shape[1]]
    mask = block_mask(key_valid, q_pos, k_pos, causal, q_seg, segments)
    return LocalAttention.apply(q, k, v, scale, mask, None)
