"""Tensor-parallel building blocks that torch's DTensor styles do not provide.

`all_reduce_sum` is the reduction inside a computation whose result every rank of the group uses (a
norm over channels that the group holds in pieces): forward sums over the group, backward sums the
gradients over the group too, because every rank's output depended on every rank's input.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = x.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = grad.contiguous().clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


def all_reduce_sum(x: torch.Tensor, group) -> torch.Tensor:
    """Sum of `x` over `group`, differentiable (the gradient is summed over the group as well)."""
    if group is None or dist.get_world_size(group) == 1:
        return x
    return _AllReduceSum.apply(x, group)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's piece of a DTensor (the tensor itself otherwise)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


__all__ = ["all_reduce_sum", "local"]
