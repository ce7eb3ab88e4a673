"""A packed batch through VideoDiT equals its samples run one by one (float64, within 1e-10).

Three samples of different (frames, height, width) form one sequence of 8 + 6 + 9 = 23 tokens. The
reference runs each sample alone through the unpacked model; the packed forward must give the same
per-sample outputs, the same flow-matching loss (one normaliser over every real element) and the same
gradients for every parameter and every input. On one rank here; on real gloo ranks (one launch of 4)
under context parallelism, Ulysses, ring and USP, with tensor parallelism, where the padded sequence of 24
splits so that samples cross rank boundaries.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.distributed import run_ranks

SHAPES = [(4, 2, 4, 4), (4, 1, 6, 4), (4, 3, 2, 6)]  # (C, F, H, W): 8, 6 and 9 tokens with patch (1, 2, 2)


def _config(**kw):
    from diffusion.dit import DiTConfig

    base = dict(in_channels=4, out_channels=4, dim=48, ffn_dim=64, num_heads=4, num_layers=2, text_dim=16,
                freq_dim=16, rope_max_seq_len=64, text_attention_mask=True)
    return DiTConfig(**{**base, **kw})


def _inputs():
    g = torch.Generator().manual_seed(1)  # the same on every rank
    xs = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    t = torch.rand(len(SHAPES), generator=g, dtype=torch.float64) * 1000
    text = torch.randn(len(SHAPES), 5, 16, generator=g, dtype=torch.float64)
    mask = torch.ones(len(SHAPES), 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    targets = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    return xs, t, text, mask, targets


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _normalizer(xs) -> float:
    return float(sum(x.numel() for x in xs))


def _one_by_one(model, xs, t, text, mask, targets):
    """Reference: each sample alone (unpacked, batch of one); the same global loss."""
    from diffusion.objective import FlowMatching

    model.zero_grad()
    leaves = [x.clone().requires_grad_(True) for x in xs]
    outs, loss = [], 0.0
    for i, x in enumerate(leaves):
        out = model(x[None], t[i:i + 1], text[i:i + 1], mask[i:i + 1])
        loss = loss + FlowMatching().loss(out, targets[i][None], normalizer=_normalizer(xs))
        outs.append(out[0].detach())
    loss.backward()
    return outs, loss.detach(), [x.grad for x in leaves], _grads(model)


def _packed(model, xs, t, text, mask, targets):
    from diffusion.objective import FlowMatching

    model.zero_grad()
    leaves = [x.clone().requires_grad_(True) for x in xs]
    outs = model(leaves, t, text, mask)
    loss = FlowMatching().packed_loss(outs, targets, None, _normalizer(xs))
    loss.backward()
    return [o.detach() for o in outs], loss.detach(), [x.grad for x in leaves], _grads(model)


def _grads(model) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    out = {}
    for n, p in model.named_parameters():
        g = p.grad
        out[n] = (g.full_tensor() if isinstance(g, DTensor) else g).clone()
    return out


def _compare(name, got, want) -> None:
    outs, loss, xgrads, grads = got
    r_outs, r_loss, r_xgrads, r_grads = want
    for i, (a, b) in enumerate(zip(outs, r_outs)):
        assert a.shape == b.shape, f"{name}: sample {i} comes back as {tuple(a.shape)}, not {tuple(b.shape)}"
        assert _rel(a, b) < 1e-10, f"{name}: output of sample {i} differs ({_rel(a, b):.2e})"
    assert _rel(loss, r_loss) < 1e-10, f"{name}: loss {float(loss)} differs from {float(r_loss)}"
    for i, (a, b) in enumerate(zip(xgrads, r_xgrads)):
        assert _rel(a, b) < 1e-10, f"{name}: input gradient of sample {i} differs ({_rel(a, b):.2e})"
    assert set(grads) == set(r_grads)
    for n, b in r_grads.items():
        assert _rel(grads[n], b) < 1e-10, f"{name}: gradient of {n} differs ({_rel(grads[n], b):.2e})"


@pytest.mark.parametrize("variant", [{}, {"activation_checkpointing": True, "pooled_text": True},
                                     {"prediction": "sample", "text_attention_mask": False, "abs_pos_embed": True}])
def test_packed_equals_one_by_one_on_one_rank(variant):
    from diffusion.dit import VideoDiT

    torch.manual_seed(0)
    model = VideoDiT(_config(**variant)).double()
    for p in model.parameters():  # zero-initialised parts (pooled text, x0 head) get values to test
        if not p.abs().sum():
            torch.nn.init.normal_(p, std=0.1)
    inputs = _inputs()
    _compare(str(variant), _packed(model, *inputs), _one_by_one(model, *inputs))


def test_packed_inputs_are_checked():
    from diffusion.dit import VideoDiT

    model = VideoDiT(_config()).double()
    xs, t, text, mask, _ = _inputs()
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        model([torch.zeros(4, 1, 3, 4, dtype=torch.float64)], t[:1], text[:1], mask[:1])
    with pytest.raises(ValueError, match="needs timesteps"):
        model(xs, t[:2], text, mask)
    with pytest.raises(ValueError, match="at least one sample"):
        model([], t[:0], text[:0], mask[:0])


def test_pack_layout_runs_cross_rank_boundaries():
    from diffusion.dit.packing import PackLayout

    layout = PackLayout(((2, 2, 2), (1, 3, 2), (3, 1, 3)))
    assert layout.cu_seqlens == [0, 8, 14, 23] and layout.total == 23
    first, second = layout.for_rank(2, 0), layout.for_rank(2, 1)
    assert first.runs == ((0, 8, 0), (8, 12, 1)) and second.runs == ((0, 2, 1), (2, 11, 2))
    assert second.token_sample.tolist()[-1] == 2  # the end padding borrows the last sample's conditions
    assert first.segments.tolist()[-1] == 3  # and is a segment of its own


def _distributed_body(rank: int, world_size: int, cases) -> list[str]:
    import torch.distributed as dist

    from diffusion.dit import VideoDiT
    from diffusion.dit.parallelize import parallelize_dit
    from diffusion.trainer import build_parallel_state

    torch.set_num_threads(1)
    cfg = _config()
    inputs = _inputs()
    torch.manual_seed(0)
    reference = VideoDiT(cfg).double()
    want = _one_by_one(reference, *inputs)
    checked = []
    for dp, cp, tp, mode in cases:
        par = build_parallel_state(dp, cp, mode, tp=tp, cp_ulysses=2)
        torch.manual_seed(0)
        model = parallelize_dit(VideoDiT(cfg).double(), None, par.cp, tp_mesh=par.tp_mesh)
        outs, loss, xgrads, grads = _packed(model, *inputs)
        # context-parallel gradients are partial per rank: their sum over the group is the gradient
        for g in [*xgrads, *grads.values()]:
            dist.all_reduce(g, group=par.cp.group)
        name = f"dp {dp} x cp {cp} x tp {tp} {mode}"
        _compare(name, (outs, loss, xgrads, grads), want)
        checked.append(name)
    return checked


@pytest.mark.distributed
def test_packed_parity_under_context_and_tensor_parallelism():
    # 23 tokens padded to 24: with cp 2 sample 1 spans ranks 0 and 1; with cp 4 every boundary cuts a sample
    cases = [(2, 2, 1, "ulysses"), (2, 2, 1, "ring"), (1, 2, 2, "ulysses"), (1, 2, 2, "ring"),
             (1, 4, 1, "usp"), (1, 4, 1, "ring")]
    out = run_ranks(_distributed_body, 4, {"cases": cases})
    assert all(len(r) == len(cases) for r in out)


def _trainer_body(rank: int, world_size: int, cases) -> list[str]:
    """The trainer on a packed batch (FSDP2 over the CP ranks, the model's plan) against the same trainer in
    one process: losses, gradient norms and weights after 3 steps with clipping active. The model has
    absolute positions and the loss the sigma^2 weight (the demo's settings), which must shard alike."""
    from diffusion.dit import VideoDiT
    from diffusion.objective import FlowMatchingConfig
    from diffusion.optim import OptimConfig
    from diffusion.trainer import TrainConfig, Trainer, build_parallel_state

    torch.set_num_threads(1)
    xs, _, text, mask, _ = _inputs()
    batch = {"latents": xs, "text": text, "text_mask": mask, "pack_tokens": 24}
    train = TrainConfig(steps=3, seed=5, ema_decay=0.0, dtype="float64",
                        optim=OptimConfig(lr=3e-3, warmup_steps=1, grad_clip=0.05, weight_decay=0.1))
    flow = FlowMatchingConfig(caption_dropout=0.0, shift=2.0, loss_weight="sigma_sq")

    def run(par=None):
        torch.manual_seed(0)
        trainer = Trainer(VideoDiT(_config(abs_pos_embed=True)), train, flow, total_steps=3, par=par)
        metrics = [trainer.train_step(s, batch) for s in range(3)]
        weights = {}
        for n, p in trainer.model.named_parameters():
            full = p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach()
            weights[n] = full.clone()
        return metrics, weights

    ref_metrics, ref_weights = run()
    assert min(m["grad_norm"] for m in ref_metrics) > 2 * train.optim.grad_clip, "clipping must be active"
    checked = []
    for dp, cp, tp, mode in cases:
        metrics, weights = run(build_parallel_state(dp, cp, mode, tp=tp, cp_ulysses=2))
        name = f"trainer dp {dp} x cp {cp} x tp {tp} {mode}"
        for m, r in zip(metrics, ref_metrics):
            assert abs(m["loss"] - r["loss"]) <= 1e-12 * abs(r["loss"]), (name, m["loss"], r["loss"])
            assert abs(m["grad_norm"] - r["grad_norm"]) <= 1e-10 * r["grad_norm"], (name, m["grad_norm"])
            assert (m["samples"], m["real_tokens"]) == (3, 23), name
        for n, w in ref_weights.items():
            assert _rel(weights[n], w) < 1e-10, f"{name}: weight {n} differs ({_rel(weights[n], w):.2e})"
        checked.append(name)
    return checked


@pytest.mark.distributed
def test_packed_training_steps_match_one_process():
    cases = [(1, 4, 1, "ring"), (1, 2, 2, "ulysses"), (1, 2, 2, "ring")]
    out = run_ranks(_trainer_body, 4, {"cases": cases})
    assert all(len(r) == len(cases) for r in out)
