"""`python -m benchmarks sample`: our generation path (TextEncoder -> sampling.sample with VideoDiT ->
VideoVAE.decode) against diffusers' WanPipeline built from the same components: a tiny random T5 encoder
with the ByT5 tokenizer, a tiny random AutoencoderKLWan, and the same DiT weights (WanTransformer3DModel
and its converted VideoDiT). Same prompt, negative prompt, seed, scheduler and guidance; reports medians,
the ratio and the largest pixel difference between the two videos."""

from __future__ import annotations

import argparse
import tempfile

import torch

from benchmarks.harness import BenchResult, median, time_interleaved

PROMPT = "a red ball bouncing on a wooden floor, slow motion"
NEGATIVE = "blurry, static, low quality"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sampler", choices=["euler", "unipc"], default="unipc")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=5, help="video frames (1 + 4k)")
    parser.add_argument("--size", type=int, default=48, help="height = width, multiple of 16")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 by default: stable timings on a shared machine; 0 = torch's)")


def run(args) -> BenchResult:
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    from diffusion.dit import DiTConfig
    from diffusion.dit.convert import from_diffusers, to_diffusers_config
    from diffusion.sampling import SamplerConfig, sample
    from diffusion.text_encoder import TextEncoder, create_tiny_text_encoder
    from diffusion.vae import VAEConfig, VideoVAE, create_tiny_wan_vae

    if args.threads:
        torch.set_num_threads(args.threads)
    text_len, te_dim, shift, seed = 32, 32, 3.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        te = TextEncoder.from_pretrained(create_tiny_text_encoder(f"{tmp}/te", dim=te_dim, max_length=text_len))
        vae = VideoVAE(VAEConfig(kind="wan", path=create_tiny_wan_vae(f"{tmp}/vae", z_dim=4)))
    cfg = DiTConfig(in_channels=vae.latent_channels, out_channels=vae.latent_channels, dim=args.dim,
                    ffn_dim=4 * args.dim, num_heads=max(1, args.dim // 32), num_layers=args.layers,
                    text_dim=te.dim, freq_dim=256)
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**to_diffusers_config(cfg)).eval()
    dit = from_diffusers(transformer).eval()

    if args.sampler == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    else:
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                            num_train_timesteps=1000, solver_order=2)
    pipe = WanPipeline(tokenizer=te.tokenizer, text_encoder=te.model, vae=vae.model, scheduler=scheduler,
                       transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    sampler = SamplerConfig(name=args.sampler, steps=args.steps, guidance=args.guidance, shift=shift, seed=seed)
    shape = (1, *vae.latent_shape(args.frames, args.size, args.size))
    out: dict[str, torch.Tensor] = {}

    def ours():
        emb, mask = te.encode([PROMPT, NEGATIVE])
        lat = sample(dit, shape, emb[:1], mask[:1], emb[1:], mask[1:], sampler)
        out["ours"] = (vae.decode(lat) + 1) / 2  # (B, C, T, H, W) in [0, 1]

    def diffusers_pipe():
        video = pipe(PROMPT, NEGATIVE, height=args.size, width=args.size, num_frames=args.frames,
                     num_inference_steps=args.steps, guidance_scale=args.guidance,
                     generator=torch.Generator().manual_seed(seed), output_type="pt",
                     max_sequence_length=text_len).frames  # (B, T, C, H, W) in [0, 1]
        out["diffusers"] = video.permute(0, 2, 1, 3, 4)

    with torch.no_grad():
        times = time_interleaved({"WanPipeline": diffusers_pipe, "ours": ours}, repeats=args.repeats)
    diff = (out["ours"] - out["diffusers"]).abs().max().item()
    rows = [{"path": name, "median_s": median(times[name]), "min_s": min(times[name]),
             "s_per_step": median(times[name]) / args.steps} for name in ("WanPipeline", "ours")]
    notes = [f"sampler={args.sampler} steps={args.steps} guidance={args.guidance} frames={args.frames} "
             f"size={args.size} latents={shape} dit dim={cfg.dim} layers={cfg.num_layers}; includes text "
             "encoding and VAE decode",
             f"max |video ours - video WanPipeline| = {diff:.2e} (pixels in [0, 1]); "
             f"ours batches cond+uncond in one DiT call"]
    return BenchResult(name="sample", columns=["path", "median_s", "min_s", "s_per_step"], rows=rows,
                       ratios={"ours speedup over WanPipeline": median(times["WanPipeline"]) / median(times["ours"])},
                       notes=notes, extra={"max_abs_pixel_diff": diff})
