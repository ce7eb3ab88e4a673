"""Gradient parity of the distributed trainer with one process, real gloo ranks, float64.

Each case runs 3 optimizer steps with gradient clipping active (and caption dropout, EMA, warmup +
cosine) through `Trainer` on dp x cp x tp ranks (the model's one plan: tensor parallelism, context
parallelism, FSDP2), each rank taking its data-parallel slice of one global batch; the reference is a plain single-process loop (torch AdamW, torch clip_grad_norm_, LambdaLR)
on the whole batch in the same process. Losses, every gradient and the weights after the last step
must agree to float64 round-off.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.distributed import run_ranks

pytestmark = pytest.mark.distributed

STEPS = 3
GLOBAL_BATCH = 4


def _setup():
    from diffusion.dit import DiTConfig
    from diffusion.objective import FlowMatchingConfig
    from diffusion.optim import OptimConfig
    from diffusion.trainer import TrainConfig

    model_cfg = DiTConfig(in_channels=4, out_channels=4, dim=32, ffn_dim=48, num_heads=4, num_layers=2,
                          text_dim=16, freq_dim=32, rope_max_seq_len=64)
    train = TrainConfig(steps=STEPS, seed=3, ema_decay=0.9, dtype="float64",
                        optim=OptimConfig(lr=3e-3, warmup_steps=1, grad_clip=0.05, weight_decay=0.1))
    flow = FlowMatchingConfig(caption_dropout=0.5, timestep_sampling="logit_normal", shift=2.0)
    g = torch.Generator().manual_seed(11)
    # latents (B, C, F, H, W): grid 2 x 3 x 2 = 12 tokens, so cp=2 and cp=4 split it evenly
    batch = {"latents": torch.randn(GLOBAL_BATCH, 4, 2, 6, 4, generator=g, dtype=torch.float64),
             "text": torch.randn(GLOBAL_BATCH, 5, 16, generator=g, dtype=torch.float64),
             "text_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]],
                                       dtype=torch.bool)}
    null = (torch.randn(1, 5, 16, generator=g, dtype=torch.float64), torch.tensor([[1, 0, 0, 0, 0]], dtype=torch.bool))
    return model_cfg, train, flow, batch, null


def _reference(model_cfg, train, flow, batch, null):
    """Plain single-process training on the whole batch: losses, grads per step, final weights."""
    from diffusion.dit import VideoDiT
    from diffusion.objective import FlowMatching
    from diffusion.optim import lr_factor
    from diffusion.trainer import sample_seed

    torch.manual_seed(0)
    model = VideoDiT(model_cfg).double()
    obj = FlowMatching(flow)
    opt = torch.optim.AdamW(model.parameters(), lr=train.optim.lr, betas=train.optim.betas, eps=train.optim.eps,
                            weight_decay=train.optim.weight_decay, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, STEPS, train.optim.warmup_steps, train.optim.min_lr_ratio))
    losses, grads, norms = [], [], []
    x0 = batch["latents"]
    for step in range(STEPS):
        opt.zero_grad()
        ts, noise, texts, masks = [], [], [], []
        for i in range(x0.shape[0]):
            g = torch.Generator().manual_seed(sample_seed(train.seed, step, i, "train"))
            ts.append(obj.sample_timesteps(1, generator=g))
            noise.append(obj.sample_noise(x0[i:i + 1], generator=g))
            t_i, m_i, _ = obj.apply_caption_dropout(batch["text"][i:i + 1], batch["text_mask"][i:i + 1],
                                                    null[0], null[1], generator=g)
            texts.append(t_i)
            masks.append(m_i)
        t = torch.cat(ts)
        xt, target = obj.noisy(x0, torch.cat(noise), t)
        pred = model(xt, t, torch.cat(texts), torch.cat(masks))
        loss = ((pred - target) ** 2).mean()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), train.optim.grad_clip)))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        losses.append(float(loss))
        opt.step()
        sched.step()
    return losses, grads, norms, {n: p.detach().clone() for n, p in model.named_parameters()}


def _full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _parity_body(rank, world_size, cases):
    torch.set_num_threads(1)
    from diffusion.dit import VideoDiT
    from diffusion.trainer import Trainer, build_parallel_state

    model_cfg, train, flow, batch, null = _setup()
    ref_losses, ref_grads, ref_norms, ref_weights = _reference(model_cfg, train, flow, batch, null)
    assert min(ref_norms) > train.optim.grad_clip * 2, "clipping must be active in this test"
    report = []
    for dp, cp, tp, mode, *flags in cases:
        train.activation_checkpointing = "ac" in flags
        par = build_parallel_state(dp, cp, mode, tp=tp)
        torch.manual_seed(0)
        model = VideoDiT(model_cfg)
        trainer = Trainer(model, train, flow, total_steps=STEPS, par=par, null_text=null)
        local = GLOBAL_BATCH // dp
        sl = slice(par.dp_rank * local, (par.dp_rank + 1) * local)
        mine = {k: v[sl] for k, v in batch.items()}
        worst_grad = 0.0
        for step in range(STEPS):
            m = trainer.train_step(step, mine)
            assert abs(m["loss"] - ref_losses[step]) <= 1e-12 * abs(ref_losses[step]), (dp, cp, mode, step, m, ref_losses)
            assert abs(m["grad_norm"] - ref_norms[step]) <= 1e-10 * ref_norms[step], (dp, cp, mode, step)
            # grads after clipping, compared with the reference's clipped grads
            for n, p in trainer.model.named_parameters():
                got, want = _full(p.grad), ref_grads[step][n]
                err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
                worst_grad = max(worst_grad, err)
                assert err < 1e-10, (dp, cp, mode, step, n, err)
        for n, p in trainer.model.named_parameters():
            got = _full(p.detach())
            err = float((got - ref_weights[n]).abs().max())
            assert err < 1e-12, (dp, cp, mode, n, err)
        report.append((dp, cp, tp, mode, *flags, worst_grad))
    return report


def test_parity_two_ranks_dp2_cp2_tp2():
    # the fourth case also recomputes every block in backward (activation checkpointing)
    out = run_ranks(_parity_body, 2, {"cases": [(2, 1, 1, "ulysses"), (1, 2, 1, "ulysses"), (1, 2, 1, "ring"),
                                                (2, 1, 1, "ulysses", "ac"), (1, 1, 2, "ulysses")]})
    assert len(out[0]) == 5


def test_parity_four_ranks():
    # the 2-D and 3-D layouts: dp x cp, tp x cp (Ulysses over each TP slot's CP group), dp x tp
    out = run_ranks(_parity_body, 4, {"cases": [(2, 2, 1, "ulysses"), (1, 2, 2, "ulysses"), (1, 2, 2, "ring"),
                                                (2, 1, 2, "ulysses")]})
    assert len(out[0]) == 4
