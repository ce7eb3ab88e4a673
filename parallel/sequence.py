"""Autograd-correct sharding of a sequence dimension over a context-parallel group.

Gradient convention (the package's "partial" rule): the sum over the group of every rank's gradient
is the true gradient of the one global objective (the sum of every rank's loss terms). So
- `shard_sequence` (forward: pad + narrow to this rank's slice) returns in backward only this rank's
  slice of the gradient (zeros elsewhere): the replicated input's gradient is summed by the module's
  DP x CP reduction like every other partial gradient;
- `gather_sequence` (forward: all-gather + unpad) sums the gradient over the group and keeps this
  rank's slice (a reduce-scatter), since every rank's downstream loss terms count. Pass
  ``grad="split"`` instead when the gathered tensor feeds a computation replicated on every rank whose
  loss is counted once (then each rank's slice of its own gradient is already complete).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from parallel.comm import all_gather_cat, group_rank, group_size


def padded_length(n: int, world: int) -> int:
    """Smallest multiple of `world` that holds `n`."""
    return -(-n // world) * world


def pad_to_multiple(x: torch.Tensor, dim: int, world: int, value: float = 0.0) -> torch.Tensor:
    n = x.shape[dim]
    extra = padded_length(n, world) - n
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [0, extra]
    return F.pad(x, pad, value=value)


def local_positions(n: int, group) -> range:
    """Global positions (of the padded sequence) held by this rank when `n` positions are sharded."""
    w, r = group_size(group), group_rank(group)
    per = padded_length(n, w) // w
    return range(r * per, (r + 1) * per)


def shard_sequence(x: torch.Tensor, dim: int, group, pad: bool = True) -> torch.Tensor:
    """This rank's contiguous slice of `x` along `dim` (padded at the end to a multiple of the group)."""
    w = group_size(group)
    if w == 1:
        return x
    n = x.shape[dim]
    if n % w and not pad:
        raise ValueError(f"sequence length {n} does not divide over {w} ranks; pass pad=True")
    xp = pad_to_multiple(x, dim, w)
    per = xp.shape[dim] // w
    return xp.narrow(dim, group_rank(group) * per, per)  # autograd: local slice, zeros elsewhere


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group, grad):
        ctx.dim, ctx.group, ctx.grad = dim, group, grad
        return all_gather_cat(x, dim, group)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()
        if ctx.grad == "sum":
            # gloo has no reduce_scatter; all_reduce + narrow moves more bytes but gives the same result
            g = g.clone()
            dist.all_reduce(g, group=ctx.group)
        per = g.shape[ctx.dim] // group_size(ctx.group)
        return g.narrow(ctx.dim, group_rank(ctx.group) * per, per).contiguous(), None, None, None


def gather_sequence(x: torch.Tensor, dim: int, group, orig_len: int | None = None,
                    grad: Literal["sum", "split"] = "sum") -> torch.Tensor:
    """All-gather the shards along `dim` and drop the padding beyond `orig_len`."""
    if grad not in ("sum", "split"):
        raise ValueError(f"grad must be 'sum' or 'split', got {grad!r}")
    out = x if group_size(group) == 1 else _Gather.apply(x, dim, group, grad)
    if orig_len is not None and orig_len < out.shape[dim]:
        out = out.narrow(dim, 0, orig_len)
    return out
