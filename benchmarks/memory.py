"""`python -m benchmarks memory`: peak resident memory per rank to load a model and train 2 steps.

A wan-1.3b-shaped DiT (its widths: dim 1536, MLP 8960, 12 heads; `--layers` of its 30 blocks, 10 by
default, so the unsharded single process fits a 24 GB machine) with random weights is saved in diffusers
format to a temporary folder. Each configuration runs in fresh processes (gloo ranks on the CPU):
- single: one process, the model built on the meta device and filled from the folder (weights, gradients,
  AdamW moments and EMA all whole): the reference;
- fsdp2: 2 ranks, FSDP2 over both, each rank reading only its own slices of the safetensors file;
- lora: one process, the base frozen, rank-16 adapters on every attention and MLP projection.
Peak RSS is the process's high-water mark (VmHWM, reset between phases to see which one peaks), minus
nothing: the ratio is what a user's machine sees. Every process fixes glibc's mmap threshold as the
launcher does for CPU ranks (parallel/host_memory.py).
For LoRA the bound is the frozen weights plus activations, where activations = the peak increase of a
forward and backward of the frozen model (measured in the LoRA process before its training steps).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

GIB = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=10, help="blocks of the wan-1.3b-shaped model (default 10)")
    parser.add_argument("--latent", default="2,16,16", help="latent F,H,W of the training batch (default 2,16,16)")


def _rss_peak() -> int:
    """The peak RSS since the last `_reset_peak` (VmHWM), or of the whole process where it cannot reset."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _reset_peak() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM), so each phase is measured alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _config(layers: int):
    from diffusion.dit import wan_1_3b_dit

    cfg = wan_1_3b_dit()
    cfg.num_layers = layers
    return cfg


def _rank(rank: int, world: int, mode: str, folder: str, layers: int, latent: tuple[int, int, int], out):
    import torch
    import torch.distributed as dist

    from diffusion.dit.build import build_dit
    from diffusion.dit.weights import DiffusersWeights
    from diffusion.lora import LoRAConfig
    from diffusion.objective import FlowMatchingConfig
    from diffusion.optim import OptimConfig
    from diffusion.trainer import (
        ParallelState,
        TrainConfig,
        Trainer,
        build_parallel_state,
        parallelize_for_training,
    )

    torch.set_num_threads(1)
    cfg = _config(layers)
    lora = LoRAConfig(rank=16) if mode == "lora" else LoRAConfig()
    train = TrainConfig(steps=2, optim=OptimConfig(lr=1e-5), ema_decay=0.999, lora=lora, tensorboard=False)
    par = build_parallel_state(world, 1) if world > 1 else ParallelState()
    device = torch.device("cpu")
    base = _rss_now()
    _reset_peak()
    model = build_dit(cfg, device=device, dtype=torch.float32, seed=0, lora=lora,
                      weights=DiffusersWeights(folder, cfg.num_layers),
                      parallelize=(lambda m: parallelize_for_training(m, train, par, device)) if world > 1 else None)
    loaded = _rss_now()
    load_peak = _rss_peak()
    g = torch.Generator().manual_seed(rank)
    batch = {"latents": torch.randn(1, cfg.in_channels, *latent, generator=g),
             "text": torch.randn(1, 64, cfg.text_dim, generator=g), "text_mask": torch.ones(1, 64, dtype=torch.bool)}
    activations = None
    if mode == "lora":  # forward + backward of the frozen model alone: the activations' share
        x = batch["latents"].clone().requires_grad_(True)
        before = _rss_now()
        _reset_peak()
        model(x, torch.tensor([500.0]), batch["text"], batch["text_mask"]).square().mean().backward()
        activations = max(0, _rss_peak() - before)
        del x
    _reset_peak()
    trainer = Trainer(model, train, FlowMatchingConfig(caption_dropout=0.0), total_steps=2, par=par, device=device)
    for step in range(2):
        trainer.train_step(step, batch)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if dist.is_initialized():
        dist.barrier()
    out.put((rank, {"peak": max(load_peak, _rss_peak()), "load_peak": load_peak, "base": base, "loaded": loaded,
                    "weights_local": weights, "activations": activations}))


def _spawn(mode: str, world: int, folder: str, layers: int, latent) -> list[dict]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'pg')}"
        procs = [ctx.Process(target=_entry, args=(r, world, init, mode, folder, layers, latent, q))
                 for r in range(world)]
        for p in procs:
            p.start()
        results = dict(q.get(timeout=1800) for _ in range(world))
        for p in procs:
            p.join(timeout=60)
    return [results[r] for r in range(world)]


def _entry(rank, world, init, mode, folder, layers, latent, q):
    import datetime

    import torch.distributed as dist

    from parallel.host_memory import map_large_blocks

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), VFM_DEVICE="cpu")
    map_large_blocks()  # as diffusion.launch does for every CPU rank
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=600))
    try:
        _rank(rank, world, mode, folder, layers, latent, q)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(args):
    import torch

    from benchmarks.harness import BenchResult
    from diffusion.dit import VideoDiT
    from diffusion.dit.convert import save_diffusers
    from diffusion.dit.weights import SeededInit, fill

    latent = tuple(int(v) for v in args.latent.split(","))
    cfg = _config(args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "wan")
        model = VideoDiT(cfg)
        fill(model, SeededInit(model, 0))
        save_diffusers(model, folder)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        del model
        runs = {"single (1 rank, unsharded)": _spawn("single", 1, folder, args.layers, latent),
                "fsdp2 (2 ranks)": _spawn("fsdp2", 2, folder, args.layers, latent),
                "lora (1 rank, rank 16)": _spawn("lora", 1, folder, args.layers, latent)}
    single = runs["single (1 rank, unsharded)"][0]["peak"]
    rows = []
    for name, ranks in runs.items():
        for r, rec in enumerate(ranks):
            rows.append({"config": name, "rank": r, "peak_GiB": rec["peak"] / GIB, "load_peak_GiB": rec["load_peak"] / GIB,
                         "after_load_GiB": rec["loaded"] / GIB, "vs_single": rec["peak"] / single})
    fsdp_worst = max(rec["peak"] for rec in runs["fsdp2 (2 ranks)"]) / single
    lora = runs["lora (1 rank, rank 16)"][0]
    bound = weights + (lora["activations"] or 0)
    lora_ratio = (lora["peak"] - lora["base"]) / bound
    notes = [f"model: wan-1.3b widths, {args.layers} blocks, {weights / 4 / 1e6:.0f}M parameters, "
             f"{weights / GIB:.2f} GiB of float32 weights; latent {latent}; torch {torch.__version__}",
             f"LoRA: peak above the process's own start {(lora['peak'] - lora['base']) / GIB:.2f} GiB; frozen "
             f"weights {weights / GIB:.2f} GiB + activations {(lora['activations'] or 0) / GIB:.2f} GiB"]
    return BenchResult(name="memory", columns=["config", "rank", "peak_GiB", "load_peak_GiB", "after_load_GiB",
                                                  "vs_single"],
                       rows=rows, ratios={"fsdp2 per-rank peak / single": fsdp_worst,
                                          "lora peak / (weights + activations)": lora_ratio},
                       notes=notes, extra={"weights_bytes": weights})
