"""VideoDiT with a context-parallel group (real gloo ranks, float64) against the same model on one rank.

One launch of 2 ranks covers Ulysses and ring, a sequence that divides and one that needs padding, a
text key mask, and activation checkpointing. Parameter gradients are partial per CP rank (the DP x CP
reduction sums them), so the test sums them over the group before comparing.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.distributed import run_ranks


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _forward_backward(model, x0, t, text, mask, w):
    model.zero_grad()
    x = x0.clone().requires_grad_(True)
    out = model(x, t, text, mask)
    loss = (out * w).sum()
    loss.backward()
    return out.detach(), loss.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


def _cp_body(rank: int, world_size: int) -> list[str]:
    import torch.distributed as dist

    from diffusion.dit import DiTConfig, VideoDiT
    from parallel.attention import ContextParallel

    torch.set_num_threads(1)
    cfg = DiTConfig(in_channels=4, out_channels=4, dim=48, ffn_dim=64, num_heads=4, num_layers=2, text_dim=16,
                    freq_dim=16, rope_max_seq_len=64, text_attention_mask=True, abs_pos_embed=True)
    cases = [
        ("ulysses", (2, 4, 2, 4, 4), False),   # 8 tokens: divides over 2 ranks
        ("ulysses", (1, 4, 3, 2, 6), True),    # 9 tokens: padded; activation checkpointing on
        ("ring", (2, 4, 2, 4, 4), True),
        ("ring", (1, 4, 3, 2, 6), False),
    ]
    checked = []
    for mode, shape, ckpt in cases:
        torch.manual_seed(0)
        model = VideoDiT(cfg).double()
        torch.nn.init.normal_(model.pos_embed, std=0.5)  # not its zero start: a misplaced position must show
        model.enable_activation_checkpointing(ckpt)
        g = torch.Generator().manual_seed(1)  # same inputs on every rank
        x0 = torch.randn(shape, generator=g, dtype=torch.float64)
        t = torch.rand(shape[0], generator=g, dtype=torch.float64) * 1000
        text = torch.randn(shape[0], 5, cfg.text_dim, generator=g, dtype=torch.float64)
        mask = torch.ones(shape[0], 5, dtype=torch.bool)
        mask[0, 3:] = False
        w = torch.randn(shape, generator=g, dtype=torch.float64)

        model.set_context_parallel(None)
        ref_out, ref_loss, ref_xgrad, ref_grads = _forward_backward(model, x0, t, text, mask, w)
        model.set_context_parallel(ContextParallel(group=dist.group.WORLD, mode=mode))
        out, loss, xgrad, grads = _forward_backward(model, x0, t, text, mask, w)
        dist.all_reduce(xgrad)
        for p in grads.values():
            dist.all_reduce(p)
        name = f"{mode} {shape} ckpt={ckpt}"
        assert _rel(out, ref_out) < 1e-10, f"{name}: output differs ({_rel(out, ref_out):.2e})"
        assert _rel(loss, ref_loss) < 1e-10, f"{name}: loss differs"
        assert _rel(xgrad, ref_xgrad) < 1e-10, f"{name}: input gradient differs ({_rel(xgrad, ref_xgrad):.2e})"
        for n, ref in ref_grads.items():
            assert _rel(grads[n], ref) < 1e-10, f"{name}: gradient of {n} differs ({_rel(grads[n], ref):.2e})"
        checked.append(name)
    checked += _fsdp_cases(cfg)
    return checked


def _fsdp_cases(cfg) -> list[str]:
    """parallelize_dit: FSDP2 over the 2 ranks, as data parallel (one sample each) and as the dp x cp
    group of a cp=2 layout (same batch, sequence sharded); with the objective's loss convention the
    summed gradients equal one process."""
    import torch.distributed as dist

    from diffusion.dit import VideoDiT
    from diffusion.dit.parallelize import parallelize_dit
    from diffusion.objective import FlowMatching
    from parallel.attention import ContextParallel
    from parallel.layout import ParallelLayout

    rank = dist.get_rank()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 3, 2, 6, generator=g, dtype=torch.float64)
    t = torch.rand(2, generator=g, dtype=torch.float64) * 1000
    text = torch.randn(2, 5, cfg.text_dim, generator=g, dtype=torch.float64)
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)

    torch.manual_seed(0)
    ref = VideoDiT(cfg).double()
    # the objective's convention: each rank's loss is sum(its masked errors) / global element count, and
    # summed gradients equal the one-process masked mean (uneven masks: sample 1 counts a quarter)
    fm = FlowMatching()
    mask = torch.ones(2, 1, *x.shape[2:], dtype=torch.float64)
    mask[1, :, :, :, 3:] = 0
    mask[1, :, 1:] = 0
    ref_loss = fm.loss(ref(x, t, text), w, mask)
    ref_loss.backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    names = []
    # layouts are built collectively, in the same order on every rank
    layouts = {"dp": ParallelLayout("dit", dp=2).build("gloo"), "cp": ParallelLayout("dit", cp=2).build("gloo")}
    for label, how in (("fsdp dp=2 (group)", "dp"), ("fsdp cp=2 (group)", "cp"),
                       ("fsdp dp=2 (layout)", "dp-layout"), ("fsdp cp=2 (layout, ring)", "cp-layout")):
        torch.manual_seed(0)
        model = VideoDiT(cfg).double()
        if how.endswith("layout"):
            parallelize_dit(model, layouts[how[:2]], cp_mode="ring")
        else:
            parallelize_dit(model, dist.group.WORLD,
                            ContextParallel(group=dist.group.WORLD, mode="ulysses") if how == "cp" else None)
        cp = model._cp
        assert (cp is not None) == how.startswith("cp"), f"{label}: context parallel not set as planned"
        if cp is None:  # data parallel: one sample per rank, normalised by the global count
            sl = slice(rank, rank + 1)
            pred = model(x[sl], t[sl], text[sl])
            norm = FlowMatching.global_normalizer(pred, mask[sl], dist.group.WORLD)
            assert norm.item() == mask.sum().item() * cfg.out_channels
            loss = fm.loss(pred, w[sl], mask[sl], normalizer=norm)
        else:  # context parallel: both ranks hold the whole batch; the reduction sums partial grads
            loss = fm.loss(model(x, t, text), w, mask)
        loss.backward()
        for n, p in model.named_parameters():
            full = p.grad.full_tensor()
            assert _rel(full, ref_grads[n]) < 1e-10, f"{label}: gradient of {n} differs ({_rel(full, ref_grads[n]):.2e})"
        names.append(label)
    return names


@pytest.mark.distributed
def test_context_parallel_matches_one_rank():
    results = run_ranks(_cp_body, world_size=2)
    assert all(len(r) == 8 for r in results)
