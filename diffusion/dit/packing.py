"""Packed sequences: several samples of different (frames, height, width) in one token sequence.

Sample i's tokens sit at [cu_seqlens[i], cu_seqlens[i+1]) of the packed sequence (row-major over its own
token grid, as an unpacked forward lays them out). Under context parallelism the sequence is padded at
the end to a multiple of the group and split in equal contiguous shards, so a sample may cross a rank
boundary; the padding forms a segment of its own, so no real token ever attends to it.

`PackLayout` is the whole packed batch (the same on every rank); `RankPack` is what the blocks of one rank
need: the segment id of every global position (context-parallel attention), the sample of each of its
tokens (per-token modulation) and the contiguous runs of one sample in its shard (cross-attention to
that sample's text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parallel.sequence import padded_length


@dataclass(frozen=True)
class PackLayout:
    grids: tuple[tuple[int, int, int], ...]  # each sample's token grid (frames, height, width) after patchify

    @property
    def seq_lens(self) -> list[int]:
        return [math.prod(g) for g in self.grids]

    @property
    def cu_seqlens(self) -> list[int]:
        out = [0]
        for n in self.seq_lens:
            out.append(out[-1] + n)
        return out

    @property
    def num_samples(self) -> int:
        return len(self.grids)

    @property
    def total(self) -> int:
        """Real tokens: the packed sequence before any context-parallel padding."""
        return sum(self.seq_lens)

    def segments(self, length: int, device=None) -> torch.Tensor:
        """(length,) int64 sample index of each position; positions past the samples get num_samples."""
        ids = torch.repeat_interleave(torch.arange(self.num_samples), torch.tensor(self.seq_lens))
        pad = torch.full((length - self.total,), self.num_samples, dtype=torch.int64)
        return torch.cat([ids, pad]).to(device)

    def for_rank(self, world: int, rank: int, device=None) -> RankPack:
        """What rank `rank` of a `world`-rank context-parallel group needs (world 1: no parallelism)."""
        padded = padded_length(self.total, world)
        per = padded // world
        seg = self.segments(padded)
        lo, hi = rank * per, (rank + 1) * per
        local = seg[lo:hi]
        runs = []  # the part of each sample inside this shard, in shard coordinates
        cu = self.cu_seqlens
        for i, (a, b) in enumerate(zip(cu, cu[1:])):
            if max(a, lo) < min(b, hi):
                runs.append((max(a, lo) - lo, min(b, hi) - lo, i))
        token_sample = local.clamp_max(self.num_samples - 1)  # padding borrows the last sample's conditions
        return RankPack(segments=seg.to(device) if world > 1 else None, cu_seqlens=self.cu_seqlens,
                        token_sample=token_sample.to(device), runs=tuple(runs), local_len=per)


@dataclass(frozen=True)
class RankPack:
    segments: torch.Tensor | None  # (padded global length,) segment ids; None on one rank
    cu_seqlens: list[int]  # the samples' offsets in the packed sequence (one rank: attention by segment)
    token_sample: torch.Tensor  # (local length,) int64: whose timestep and modulation each token takes
    runs: tuple[tuple[int, int, int], ...]  # (start, end, sample) of this shard's real tokens
    local_len: int


def check_packed_inputs(xs, timestep: torch.Tensor, text: torch.Tensor, in_channels: int,
                        patch: tuple[int, int, int]) -> PackLayout:
    """The layout of a packed forward's inputs; ValueError naming the first bad one."""
    if len(xs) == 0:
        raise ValueError("a packed batch needs at least one sample")
    grids = []
    for i, x in enumerate(xs):
        if x.ndim != 4 or x.shape[0] != in_channels:
            raise ValueError(f"packed sample {i}: expected latents (C={in_channels}, F, H, W), got {tuple(x.shape)}")
        f, h, w = x.shape[1:]
        if f % patch[0] or h % patch[1] or w % patch[2]:
            raise ValueError(f"packed sample {i}: latent size (F={f}, H={h}, W={w}) is not divisible by "
                             f"patch_size {patch}")
        grids.append((f // patch[0], h // patch[1], w // patch[2]))
    if timestep.shape != (len(xs),):
        raise ValueError(f"a packed batch of {len(xs)} samples needs timesteps ({len(xs)},), got {tuple(timestep.shape)}")
    if text.shape[0] != len(xs):
        raise ValueError(f"a packed batch of {len(xs)} samples needs text ({len(xs)}, L, D), got {tuple(text.shape)}")
    return PackLayout(tuple(grids))
