"""`python -m benchmarks dit`: forward+backward of VideoDiT against diffusers' WanTransformer3DModel with
the same config and the same weights (converted), interleaved; reports medians, the ratio, tokens/s,
the output difference, and on CUDA the model FLOPs utilisation (MFU) against the chip's peak."""

from __future__ import annotations

import argparse

import torch

from benchmarks.harness import BenchResult, median, time_interleaved

# dense bf16 peak, FLOP/s, by device-name substring (MFU denominator)
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["small", "wan-1.3b"], default=None,
                        help="small (CPU default) or wan-1.3b (GPU default, bf16, ~32k tokens)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--layers", type=int, default=None, help="override the number of blocks")
    parser.add_argument("--latent", default=None, help="latent F,H,W (default per preset)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute blocks in backward in both models (long sequences on a GPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 by default: stable timings on a shared machine; 0 = torch's)")


def _setup(args):
    from diffusion.dit import DiTConfig, wan_1_3b_dit

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("wan-1.3b" if device.startswith("cuda") else "small")
    if preset == "small":
        cfg = DiTConfig(in_channels=16, out_channels=16, dim=128, ffn_dim=512, num_heads=4, num_layers=4,
                        text_dim=128, freq_dim=256)
        latent, batch, dtype, text_len = (4, 16, 16), 2, "float32", 32
    else:
        cfg = wan_1_3b_dit()
        # 21 x 60 x 104 latents (81 frames at 480x832) -> 21*30*52 = 32760 tokens
        latent, batch, dtype, text_len = (21, 60, 104), 1, "bfloat16", 512
    if args.layers:
        cfg.num_layers = args.layers
    if args.latent:
        latent = tuple(int(v) for v in args.latent.split(","))
    batch = args.batch or batch
    dtype = getattr(torch, args.dtype or dtype)
    return cfg, device, preset, latent, batch, dtype, text_len


def model_flops(cfg, batch: int, tokens: int, text_len: int) -> float:
    """Forward+backward matmul FLOPs (3x forward): projections, attention scores/values, MLP."""
    d, f = cfg.dim, cfg.ffn_dim
    per_block = (8 * tokens * d * d            # self-attn Q, K, V, O
                 + 4 * tokens * tokens * d     # QK^T and AV
                 + 4 * tokens * d * d + 4 * text_len * d * d   # cross-attn Q, O and K, V
                 + 4 * tokens * text_len * d   # cross-attention scores/values
                 + 4 * tokens * d * f)         # MLP
    return 3.0 * batch * cfg.num_layers * per_block


def run(args) -> BenchResult:
    from diffusers import WanTransformer3DModel

    from diffusion.dit.convert import from_diffusers, to_diffusers_config

    cfg, device, preset, latent, batch, dtype, text_len = _setup(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = WanTransformer3DModel(**to_diffusers_config(cfg))
    ours = from_diffusers(ref)
    ref.to(device=device).train()
    ours.to(device=device).train()
    if dtype != torch.float32:  # both models fully in dtype (norms still compute in float32 in each)
        ref.to(dtype)
        ours.to(dtype)
    if args.activation_checkpointing:
        ref.enable_gradient_checkpointing()
        ours.enable_activation_checkpointing()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, *latent, generator=g).to(device, dtype)
    t = (torch.rand(batch, generator=g) * 1000).to(device)
    text = torch.randn(batch, text_len, cfg.text_dim, generator=g).to(device, dtype)
    tokens = latent[0] // cfg.patch_size[0] * (latent[1] // cfg.patch_size[1]) * (latent[2] // cfg.patch_size[2])

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def step_ref():
        ref.zero_grad(set_to_none=True)
        ref(x, t, text, return_dict=False)[0].float().square().mean().backward()
        sync()

    def step_ours():
        ours.zero_grad(set_to_none=True)
        ours(x, t, text).float().square().mean().backward()
        sync()

    with torch.no_grad():
        diff = (ref(x, t, text, return_dict=False)[0].float() - ours(x, t, text).float()).abs().max().item()
    times = time_interleaved({"diffusers": step_ref, "videodit": step_ours}, repeats=args.repeats)
    flops = model_flops(cfg, batch, tokens, text_len)
    peak = next((v for k, v in PEAKS.items() if device.startswith("cuda") and k in torch.cuda.get_device_name()),
                None)
    rows = []
    for name in ("diffusers", "videodit"):
        s = median(times[name])
        rows.append({"model": name, "median_s": s, "min_s": min(times[name]), "tokens_per_s": batch * tokens / s,
                     "TFLOPS": flops / s / 1e12, "MFU": (flops / s / peak) if peak else None})
    speedup = median(times["diffusers"]) / median(times["videodit"])
    n_params = sum(p.numel() for p in ours.parameters())
    notes = [f"preset={preset} device={device} dtype={str(dtype).removeprefix('torch.')} params={n_params / 1e6:.1f}M "
             f"layers={cfg.num_layers} dim={cfg.dim} threads={torch.get_num_threads()} batch={batch} "
             f"latent={latent} tokens={tokens} text={text_len}",
             f"forward max |videodit - diffusers| = {diff:.2e}; repeats={args.repeats} (interleaved); "
             f"activation checkpointing={'on' if args.activation_checkpointing else 'off'}; MFU counts model "
             "FLOPs (3x forward), not recomputation"]
    return BenchResult(name="dit", columns=["model", "median_s", "min_s", "tokens_per_s", "TFLOPS", "MFU"],
                       rows=rows, ratios={"videodit speedup over diffusers": speedup}, notes=notes,
                       extra={"max_abs_diff": diff, "tokens": tokens, "flops_per_step": flops})
