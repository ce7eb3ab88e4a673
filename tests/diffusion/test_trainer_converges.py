"""A tiny DiT trained on one real clip with a fixed seed learns it: the loss of the last 10% of steps is
at most half that of the first 10%."""

from __future__ import annotations

import torch

from tests.diffusion.test_trainer_helpers import curated  # noqa: F401  (session fixture)

STEPS = 300


def test_tiny_model_learns_one_clip(curated):  # noqa: F811
    from dataload.loader import build_loader
    from dataload.loader.config import LoaderConfig
    from diffusion.dit import DiTConfig, VideoDiT
    from diffusion.objective import FlowMatchingConfig
    from diffusion.optim import OptimConfig
    from diffusion.trainer import TrainConfig, Trainer
    from diffusion.vae import VAEConfig, VideoVAE

    torch.set_num_threads(1)
    loader = build_loader([(str(curated), 1.0)], LoaderConfig(batch_size=1, num_frames=4, fps=8.0,
                                                              buckets=[(16, 16)], start="center"))
    batch = next(iter(loader))
    video = batch["video"].float() / 127.5 - 1.0  # (1, T, C, H, W)
    latents = VideoVAE(VAEConfig(kind="pixel", space_to_depth=2)).encode(video.permute(0, 2, 1, 3, 4))
    g = torch.Generator().manual_seed(0)
    data = {"latents": latents, "text": torch.randn(1, 4, 16, generator=g), "text_mask": torch.ones(1, 4, dtype=torch.bool)}

    torch.manual_seed(0)
    model = VideoDiT(DiTConfig(in_channels=12, out_channels=12, dim=48, ffn_dim=96, num_heads=4, num_layers=2,
                               text_dim=16, freq_dim=32, rope_max_seq_len=64))
    train = TrainConfig(steps=STEPS, seed=0, ema_decay=0.0,
                        optim=OptimConfig(lr=3e-3, warmup_steps=10, weight_decay=0.0, grad_clip=1.0))
    trainer = Trainer(model, train, FlowMatchingConfig(caption_dropout=0.0, timestep_sampling="uniform"),
                      total_steps=STEPS)
    losses = [trainer.train_step(step, data)["loss"] for step in range(STEPS)]
    k = STEPS // 10
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    print(f"first 10%: {first:.4f}  last 10%: {last:.4f}  ratio {last / first:.3f}")
    assert last <= 0.5 * first, (first, last)
