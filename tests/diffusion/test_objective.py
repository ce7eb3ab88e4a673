"""Flow-matching objective: the convention matches diffusers' flow schedulers; sampling and loss."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion.objective import FlowMatching, FlowMatchingConfig, shift_sigmas


def test_shift_matches_the_diffusers_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # the training sigma tables (before set_timesteps) of an unshifted and a shifted scheduler
    plain = FlowMatchEulerDiscreteScheduler(shift=1.0)
    shifted = FlowMatchEulerDiscreteScheduler(shift=5.0)
    want = shifted.sigmas.double()
    got = shift_sigmas(plain.sigmas.double(), 5.0)
    assert torch.allclose(got, want, atol=1e-6)
    assert (got - plain.sigmas.double()).abs().max() > 0.1


def test_noisy_and_target_follow_the_scheduler_convention():
    from diffusers import FlowMatchEulerDiscreteScheduler

    fm = FlowMatching(FlowMatchingConfig(shift=3.0))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 2, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(6)
    t = sched.timesteps[2].repeat(2)
    xt, target = fm.noisy(x0, noise, t.double())
    # the scheduler's forward process gives the same x_t
    assert torch.allclose(xt, sched.scale_noise(x0, t[:1], noise), atol=1e-6)
    # an Euler step with the target velocity moves exactly along the straight path to x0
    for i in range(2, 6):
        sched._step_index = i
        sigma_next = sched.sigmas[i + 1].item()
        xt = sched.step(target, sched.timesteps[i], xt, return_dict=False)[0]
        assert torch.allclose(xt, (1 - sigma_next) * x0 + sigma_next * noise, atol=1e-5)
    assert torch.allclose(xt, x0, atol=1e-5)


def test_logit_normal_and_uniform_distributions():
    g = torch.Generator().manual_seed(0)
    ln = FlowMatching(FlowMatchingConfig(timestep_sampling="logit_normal", logit_mean=0.5, logit_std=0.8))
    s = ln.sample_sigmas(20000, g)
    logits = torch.log(s / (1 - s))
    assert abs(logits.mean().item() - 0.5) < 0.03 and abs(logits.std().item() - 0.8) < 0.03
    uni = FlowMatching(FlowMatchingConfig(timestep_sampling="uniform"))
    u = uni.sample_sigmas(20000, g)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    # a shift > 1 moves mass to high noise: the median follows the shift map
    sh = FlowMatching(FlowMatchingConfig(timestep_sampling="uniform", shift=3.0)).sample_sigmas(20000, g)
    assert abs(sh.median().item() - 3 * 0.5 / (1 + 2 * 0.5)) < 0.01
    t = uni.sample_timesteps(8, g)
    assert t.dtype == torch.float32 and (t > 0).all() and (t < 1000).all()


def test_same_seed_same_draws_on_every_rank():
    fm = FlowMatching()
    like = torch.zeros(2, 3, 1, 2, 2)
    a = fm.sample_timesteps(4, torch.Generator().manual_seed(7)), fm.sample_noise(like, torch.Generator().manual_seed(7))
    b = fm.sample_timesteps(4, torch.Generator().manual_seed(7)), fm.sample_noise(like, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], fm.sample_timesteps(4, torch.Generator().manual_seed(8)))


def test_masked_loss():
    fm = FlowMatching()
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(pred.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(fm.loss(pred, target), ((pred - target) ** 2).mean())
    # per-sample mask: the second sample does not count at all
    loss = fm.loss(pred, target, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(loss, ((pred[0] - target[0]) ** 2).mean())
    loss.backward()
    assert pred.grad[1].abs().max() == 0 and pred.grad[0].abs().max() > 0
    # spatial mask (B,1,F,H,W): masked mean over the kept elements of every channel
    m = torch.zeros(2, 1, 2, 4, 4, dtype=torch.float64)
    m[:, :, :, :2] = 1
    want = ((pred - target) ** 2)[:, :, :, :2].mean()
    assert torch.allclose(fm.loss(pred, target, m), want)
    # with a global normaliser the loss is sum / count: two halves add up to the whole
    n = FlowMatching.global_normalizer(pred)
    halves = fm.loss(pred[:1], target[:1], normalizer=n) + fm.loss(pred[1:], target[1:], normalizer=n)
    assert torch.allclose(halves, fm.loss(pred, target))
    assert FlowMatching.element_count(pred, m).item() == m.sum().item() * 3


def test_sigma_sq_weight_is_the_clean_sample_error_of_an_x0_model():
    """With loss_weight="sigma_sq", the velocity loss of a sample-predicting DiT equals the squared error of
    its clean sample at every noise level (above its sigma floor), in plain and packed batches."""
    from diffusion.dit import DiTConfig, VideoDiT

    cfg = DiTConfig(in_channels=4, out_channels=4, patch_size=(1, 2, 2), dim=32, ffn_dim=64, num_heads=2,
                    num_layers=1, text_dim=16, freq_dim=16, prediction="sample")
    model = VideoDiT(cfg).double()
    torch.nn.init.normal_(model.head.proj.weight, std=0.1)  # not the zero start: x0_hat varies
    fm = FlowMatching(FlowMatchingConfig(loss_weight="sigma_sq"))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([80.0, 500.0, 950.0], dtype=torch.float64)
    text = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    xt, target = fm.noisy(x0, noise, t)
    v = model(xt, t, text)
    sigma = (t / 1000).view(-1, 1, 1, 1, 1)
    x0_hat = xt - sigma * v  # what the model predicted, recovered from its velocity
    want = ((x0_hat - x0) ** 2).mean()
    assert torch.allclose(fm.loss(v, target, weights=fm.loss_weights(t)), want, rtol=1e-10)
    packed = fm.packed_loss(list(v), list(target), None, x0.numel(), loss_weights=fm.loss_weights(t))
    assert torch.allclose(packed, want, rtol=1e-10)
    # the uniform weight is the plain velocity error, which weighs the clean end by 1 / sigma^2
    assert FlowMatching().loss_weights(t) is None
    assert torch.allclose(FlowMatching().loss(v, target), (((x0_hat - x0) / sigma) ** 2).mean(), rtol=1e-10)


def test_caption_dropout():
    text = torch.randn(64, 5, 8)
    mask = torch.ones(64, 5, dtype=torch.bool)
    empty = torch.full((5, 8), 0.25)
    empty_mask = torch.tensor([True, False, False, False, False])
    fm = FlowMatching(FlowMatchingConfig(caption_dropout=0.5))
    t1, m1, d1 = fm.apply_caption_dropout(text, mask, empty, empty_mask, torch.Generator().manual_seed(3))
    t2, _, d2 = fm.apply_caption_dropout(text, mask, empty, empty_mask, torch.Generator().manual_seed(3))
    assert torch.equal(d1, d2) and torch.equal(t1, t2)
    assert 16 < int(d1.sum()) < 48
    assert torch.equal(t1[d1], empty.expand(int(d1.sum()), 5, 8))
    assert torch.equal(t1[~d1], text[~d1])
    assert torch.equal(m1[d1], empty_mask.expand(int(d1.sum()), 5))
    _, _, none = fm.apply_caption_dropout(text, mask, empty, empty_mask, rate=0.0)
    _, _, all_ = fm.apply_caption_dropout(text, mask, empty, empty_mask, rate=1.0)
    assert not none.any() and all_.all()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="timestep_sampling"):
        FlowMatchingConfig(timestep_sampling="cosine")
    with pytest.raises(ValueError, match="shift"):
        FlowMatchingConfig(shift=0)
    assert math.isclose(shift_sigmas(torch.tensor(0.5), 1.0).item(), 0.5)
