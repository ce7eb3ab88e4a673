"""Heterogeneous two-module training step: encoder -> boundary -> backbone.

- Colocated (same ranks): per microbatch, encoder forward, boundary, backbone forward, backward.
- Non-colocated (disjoint ranks): the encoder ranks are the first pipeline stage and run ahead: they
  send every microbatch's activations (non-blocking) before waiting for the first gradient, so all
  microbatches are in flight while the backbone ranks consume them one by one.

Gradient finalisation: the per-token loss is divided once by the global token count (summed over
every microbatch and the backbone's whole DP x CP group), so each module's data-parallel reduction is a
plain sum over its own (dp, cp) group. The optimizer step then agrees across modules: every rank
all-reduces the squared gradient norm (each module counted once, from its dp=cp=0 ranks) and an
inf/NaN flag over the union of both layouts, so they clip by the same coefficient and skip together.
Tensor-parallel sharded parameters are not handled here (tp must be 1 for the modules stepped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from parallel.boundary import ColocatedBoundary, P2PBoundary
from parallel.comm import CommStats
from parallel.errors import LayoutError
from parallel.layout import BuiltLayout

GRAD_DIMS = ("dp", "cp")


@dataclass
class Stage:
    layout: BuiltLayout
    model: nn.Module | None = None  # None on ranks outside the layout
    optimizer: torch.optim.Optimizer | None = None

    @property
    def active(self) -> bool:
        return self.layout.is_member and self.model is not None


@dataclass
class StepResult:
    loss: float  # global loss (sum of per-token losses / global token count)
    grad_norm: float  # global gradient norm before clipping
    skipped: bool  # inf/NaN somewhere: no module stepped
    tokens: int


# encode(model, microbatch, layout) -> this rank's encoder output for its data-parallel slot
EncodeFn = Callable[[nn.Module, Any, BuiltLayout], torch.Tensor]
# backbone_loss(model, encoder_output, microbatch, layout) -> sum of this rank's per-token losses
LossFn = Callable[[nn.Module, torch.Tensor, Any, BuiltLayout], torch.Tensor]
# count_tokens(microbatch, layout) -> this rank's number of loss tokens
CountFn = Callable[[Any, BuiltLayout], int]


class HeteroSchedule:
    def __init__(self, encoder: Stage, backbone: Stage, boundary: ColocatedBoundary | P2PBoundary,
                 max_grad_norm: float | None = 1.0, union_group=None, stats: CommStats | None = None):
        for st in (encoder, backbone):
            if st.layout.layout.tp != 1:
                raise LayoutError(f"layout {st.layout.name!r}: tp={st.layout.layout.tp}, but the schedule has no "
                                  f"tensor-parallel layers; use tp=1")
        self.encoder, self.backbone, self.boundary = encoder, backbone, boundary
        self.stats = stats  # counts gradient-reduction bytes when set
        self.max_grad_norm = max_grad_norm
        self.union_group = union_group  # None: the default (world) group

    @property
    def colocated(self) -> bool:
        return isinstance(self.boundary, ColocatedBoundary)

    def forward_backward(self, microbatches: Sequence[Any], encode: EncodeFn, loss_fn: LossFn,
                         count_tokens: CountFn) -> tuple[torch.Tensor, int]:
        """Run every microbatch forward and backward; returns (this rank's loss share, global tokens)."""
        enc, bb = self.encoder, self.backbone
        tokens = torch.zeros((), dtype=torch.float64)
        if bb.active:
            tokens += sum(count_tokens(mb, bb.layout) for mb in microbatches)
            dist.all_reduce(tokens, group=bb.layout.group(GRAD_DIMS))
        tokens = _share(tokens, bb.active, self.union_group)  # encoder-only ranks learn it too
        n_tokens = max(int(tokens.item()), 1)
        loss_acc = torch.zeros((), dtype=torch.float64)
        if self.colocated:
            for mb in microbatches if bb.active else ():
                y = self.boundary(encode(enc.model, mb, enc.layout))
                loss = loss_fn(bb.model, y, mb, bb.layout) / n_tokens
                loss.backward()
                loss_acc += loss.detach().double()
        else:
            outs = []
            if enc.active:  # first stage: every microbatch goes out before any gradient comes back
                for m, mb in enumerate(microbatches):
                    e = encode(enc.model, mb, enc.layout)
                    self.boundary.send(e, m)
                    outs.append(e)
            if bb.active:
                for m, mb in enumerate(microbatches):
                    y = self.boundary.recv(m)
                    loss = loss_fn(bb.model, y, mb, bb.layout) / n_tokens
                    loss.backward()  # ships y's gradient back to the encoder leaders
                    loss_acc += loss.detach().double()
            for m, e in enumerate(outs):
                torch.autograd.backward(e, self.boundary.recv_grad(e, m))
            self.boundary.wait()
        return loss_acc, int(tokens.item())

    def step(self, microbatches: Sequence[Any], encode: EncodeFn, loss_fn: LossFn,
             count_tokens: CountFn) -> StepResult:
        loss_acc, n_tokens = self.forward_backward(microbatches, encode, loss_fn, count_tokens)
        self.finalize_gradients()
        return self.optimizer_step(loss_acc, n_tokens)

    def _stages(self) -> list[Stage]:
        return [s for s in (self.encoder, self.backbone) if s.active]

    def finalize_gradients(self) -> None:
        """Each module sums its gradients over its own (dp, cp) group."""
        for s in self._stages():
            reduce_gradients(s.model, s.layout.group(GRAD_DIMS), self.stats)

    def optimizer_step(self, loss_acc: torch.Tensor, n_tokens: int) -> StepResult:
        """Agree on the global norm and on skipping, clip, step every module, zero the gradients."""
        stages = self._stages()
        sq = torch.zeros((), dtype=torch.float64)
        for s in stages:
            c = s.layout.coords()
            if c["dp"] == 0 and c["cp"] == 0:  # count each module's (replicated) gradients once
                sq += sum((p.grad.double() ** 2).sum() for p in s.model.parameters() if p.grad is not None)
        stats = torch.stack([sq, (~torch.isfinite(sq)).double(), loss_acc])
        stats = torch.nan_to_num(stats, nan=0.0, posinf=0.0)  # the flag carries the non-finite news
        dist.all_reduce(stats, group=self.union_group)
        nonfinite = stats[1].item() > 0
        norm = float("inf") if nonfinite else stats[0].sqrt().item()
        if not nonfinite:
            if self.max_grad_norm is not None:
                coef = self.max_grad_norm / (norm + 1e-6)  # same rule as torch.nn.utils.clip_grad_norm_
                if coef < 1.0:
                    for s in stages:
                        for p in s.model.parameters():
                            if p.grad is not None:
                                p.grad.mul_(coef)
            for s in stages:
                if s.optimizer is not None:
                    s.optimizer.step()
        for s in stages:
            if s.optimizer is not None:
                s.optimizer.zero_grad(set_to_none=True)
            else:
                s.model.zero_grad(set_to_none=True)
        return StepResult(loss=stats[2].item(), grad_norm=norm, skipped=nonfinite, tokens=n_tokens)


def _share(value: torch.Tensor, holder: bool, group) -> torch.Tensor:
    """Max-reduce so ranks that do not hold the value get it (holders agree on it)."""
    out = value.clone() if holder else torch.full_like(value, float("-inf"))
    dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
    return out


def reduce_gradients(model: nn.Module, group, stats: CommStats | None = None) -> None:
    """Sum every parameter's gradient over `group` in one flat buffer (missing gradients count as 0)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or dist.get_world_size(group) == 1:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, group=group)
    if stats is not None:  # ring all-reduce volume
        n = dist.get_world_size(group)
        stats.add(flat.numel() * flat.element_size() * 2 * (n - 1) // n)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
