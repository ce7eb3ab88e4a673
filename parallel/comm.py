"""Small collective helpers with autograd where a layer needs it (all-to-all, all-gather, ring shift)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class CommStats:
    """Bytes this rank sent (optional, per object; benchmarks compare them with the theory)."""

    bytes_sent: int = 0
    messages: int = 0

    def add(self, nbytes: int) -> None:
        self.bytes_sent += int(nbytes)
        self.messages += 1


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def group_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


def global_rank(group, index: int) -> int:
    return dist.get_global_rank(group, index)


def all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """all_to_all_single over dim 0 (one equal chunk per rank of `group`)."""
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x.contiguous(), group=group)
    return out


def all_gather_cat(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(group_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def ring_shift(tensors: list[torch.Tensor], group, stats: CommStats | None = None) -> list[torch.Tensor]:
    """Send each tensor to the next rank of the ring, receive the previous rank's (batched p2p)."""
    recv, works = ring_shift_start(tensors, group, stats)
    for w in works:
        w.wait()
    return recv


class _AllToAll(torch.autograd.Function):
    """Forward: all-to-all with `fwd` permutation helpers; backward: the inverse all-to-all."""

    @staticmethod
    def forward(ctx, x, group, scatter_dim, gather_dim, stats):
        ctx.group, ctx.scatter_dim, ctx.gather_dim, ctx.stats = group, scatter_dim, gather_dim, stats
        return _seq_all_to_all(x, group, scatter_dim, gather_dim, stats)

    @staticmethod
    def backward(ctx, g):
        return _seq_all_to_all(g, ctx.group, ctx.gather_dim, ctx.scatter_dim, ctx.stats), None, None, None, None


def _seq_all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int,
                    stats: CommStats | None = None) -> torch.Tensor:
    """Split `scatter_dim` into P chunks, send chunk j to rank j, concatenate received along `gather_dim`."""
    p = group_size(group)
    chunks = x.chunk(p, dim=scatter_dim)
    send = torch.stack(chunks, dim=0)  # (P, ...) chunk j goes to rank j
    recv = all_to_all(send, group)  # (P, ...) slot j came from rank j
    if stats is not None:  # the chunk addressed to this rank never leaves it
        stats.add(_nbytes(send) * (p - 1) // p)
    return torch.cat(recv.unbind(0), dim=gather_dim)


def seq_all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int,
                   stats: CommStats | None = None) -> torch.Tensor:
    """Autograd all-to-all: scatter `scatter_dim`, gather `gather_dim` (Ulysses' head/sequence swap)."""
    if group_size(group) == 1:
        return x
    return _AllToAll.apply(x, group, scatter_dim, gather_dim, stats)


def ring_shift_start(tensors: list[torch.Tensor], group, stats: CommStats | None = None):
    """Non-blocking `ring_shift`: returns (receive buffers, works); wait on the works before use."""
    n, r = group_size(group), group_rank(group)
    nxt, prv = global_rank(group, (r + 1) % n), global_rank(group, (r - 1) % n)
    recv = [torch.empty_like(t) for t in tensors]
    ops = []
    for t, buf in zip(tensors, recv):
        ops.append(dist.P2POp(dist.isend, t.contiguous(), nxt, group=group))
        ops.append(dist.P2POp(dist.irecv, buf, prv, group=group))
        if stats is not None:
            stats.add(_nbytes(t))
    return recv, dist.batch_isend_irecv(ops)
