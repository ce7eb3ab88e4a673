"""Single-process trainer details: padded samples weigh nothing, the LR schedule, EMA, seeded draws."""

from __future__ import annotations

import math

import torch


def _trainer(**train_kw):
    from diffusion.dit import DiTConfig, VideoDiT
    from diffusion.objective import FlowMatchingConfig
    from diffusion.optim import OptimConfig
    from diffusion.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = VideoDiT(DiTConfig(in_channels=4, out_channels=4, dim=24, ffn_dim=32, num_heads=2, num_layers=1,
                               text_dim=8, freq_dim=16, rope_max_seq_len=32))
    train = TrainConfig(steps=10, dtype="float64", optim=OptimConfig(lr=1e-2, warmup_steps=2, min_lr_ratio=0.1),
                        **train_kw)
    return Trainer(model, train, FlowMatchingConfig(caption_dropout=0.0), total_steps=10)


def _batch(n, g):
    return {"latents": torch.randn(n, 4, 1, 4, 4, generator=g, dtype=torch.float64),
            "text": torch.randn(n, 3, 8, generator=g, dtype=torch.float64),
            "text_mask": torch.ones(n, 3, dtype=torch.bool)}


def test_padded_repeats_do_not_count():
    tr = _trainer()
    g = torch.Generator().manual_seed(1)
    real = _batch(2, g)
    padded = {k: torch.cat([v, v[:1]]) for k, v in real.items()}
    padded["pad_mask"] = torch.tensor([True, True, False])
    with torch.no_grad():
        a = tr.loss(0, real)
        b = tr.loss(0, padded)
    assert torch.allclose(a, b, rtol=1e-12, atol=0)


def test_schedule_warmup_then_cosine_and_ema():
    tr = _trainer(ema_decay=0.5)
    g = torch.Generator().manual_seed(2)
    batch = _batch(2, g)
    lrs = [tr.train_step(s, batch)["lr"] for s in range(10)]
    base = 1e-2
    assert math.isclose(lrs[0], base / 2) and math.isclose(lrs[1], base)  # warmup over 2 steps
    assert math.isclose(lrs[2], base)  # the cosine starts at the peak
    assert all(x > y for x, y in zip(lrs[2:], lrs[3:]))  # then decreases
    assert lrs[-1] > base * 0.1  # cosine ends at min_lr_ratio after the last step
    # EMA lags the weights but moved from the init
    name, p = next(iter(tr.model.named_parameters()))
    shadow = tr.ema.shadow[name]
    assert not torch.equal(shadow, p.detach())


def test_draws_depend_on_step_and_global_index_only():
    from diffusion.trainer import ParallelState

    tr = _trainer()
    a = [g.initial_seed() for g in tr.draw(3, 2)]
    tr.par = ParallelState(dp_rank=1, dp_size=2)
    b = [g.initial_seed() for g in tr.draw(3, 2)]
    tr.par = ParallelState()
    c = [g.initial_seed() for g in tr.draw(3, 4)]
    assert c == a + b  # rank 1's slice draws what one process draws for samples 2 and 3
    assert [g.initial_seed() for g in tr.draw(4, 2)] != a


def _packed_batch(g, shapes):
    n = len(shapes)
    return {"latents": [torch.randn(4, *s, generator=g, dtype=torch.float64) for s in shapes],
            "text": torch.randn(n, 3, 8, generator=g, dtype=torch.float64),
            "text_mask": torch.ones(n, 3, dtype=torch.bool), "pack_tokens": 40}


def test_packed_micro_batches_equal_one_pack_and_count_real_tokens():
    """Two packs accumulated in one step train exactly like one pack holding every sample (the draws follow
    the sample's index, the normaliser counts every real element once); a loader repeat weighs nothing;
    the metrics count real samples and tokens."""
    g = torch.Generator().manual_seed(4)
    first = _packed_batch(g, [(1, 4, 4), (2, 2, 4)])
    second = _packed_batch(g, [(1, 2, 6), (3, 2, 2)])
    whole = {"latents": first["latents"] + second["latents"], "text": torch.cat([first["text"], second["text"]]),
             "text_mask": torch.cat([first["text_mask"], second["text_mask"]]), "pack_tokens": 80}
    a, b = _trainer(grad_accum=2), _trainer()
    ma = a.train_step(0, [first, second])
    mb = b.train_step(0, whole)
    assert math.isclose(ma["loss"], mb["loss"], rel_tol=1e-12)
    for (n, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-12, atol=1e-15), n
    assert ma["samples"] == 4 and ma["real_tokens"] == 4 + 4 + 3 + 3
    assert ma["pack_tokens"] == 80 and math.isclose(ma["padding_fraction"], 1 - 14 / 80)

    c = _trainer()
    repeated = {**first, "latents": first["latents"] + first["latents"][:1],
                "text": torch.cat([first["text"], first["text"][:1]]),
                "text_mask": torch.cat([first["text_mask"], first["text_mask"][:1]]),
                "pad_mask": torch.tensor([True, True, False])}
    with torch.no_grad():
        assert torch.allclose(c.loss(0, first), c.loss(0, repeated), rtol=1e-12, atol=0)
