"""hetero-video: the video trainer's encoders on their own layouts (parallel.encoders), on dp 2 x cp 2.

A real `vfm-train fit` per layout (gloo ranks, this machine's cores) on synthetic clips with online
encoding: a tiny-but-not-trivial T5 (captions) and a tiny Wan VAE (video), sized so that loading and
encoding are over half of the replicated step as its runs measure it (reported, with the most colocated
can gain: 1/(1 - share/2); at a share of a third that is 1.2x). Layouts:
- replicated: the 4 backbone ranks each encode their data-parallel slot's batch (each CP pair twice);
- colocated: each rank of a CP pair encodes half of its slot's batch, then the pair all-gathers;
- disjoint: a fifth rank loads and encodes for both slots and streams ahead to the backbone.
Samples/s per step = global batch / (data + encoding + training time of that step), from each run's
metrics.jsonl; the median of the timed steps (after warm-up), and the median over rounds.

The cost model predicts each layout's step from per-module costs measured in one process (a DiT step on
a slot's batch, encoding a slot's batch, loading one) and the machine's cores: a rank's work is its
modules' costs; the step takes the longest rank's work, or all the work over the cores when the ranks
outnumber them; a disjoint encoder rank runs beside the backbone (a pipeline: the slower side sets the
pace). Encoder FLOPs per rank are counted by torch's FlopCounterMode on one slot's encoding.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import BenchResult

LAYOUTS = ("replicated", "colocated", "disjoint")
DP, CP = 2, 2


def add_arguments(parser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="runs of every layout, interleaved (default 5)")
    parser.add_argument("--steps", type=int, default=10,
                        help="optimizer steps per run (the last 5 are timed: the first ones fill the pipeline)")
    parser.add_argument("--batch", type=int, default=4, help="clips per data-parallel slot")
    parser.add_argument("--dit-layers", type=int, default=4, help="DiT blocks (fewer: a larger encoding share)")
    parser.add_argument("--vae-dim", type=int, default=32, help="the tiny Wan VAE's base width (more: a larger share)")


def _setup(tmp: Path, batch: int, steps: int, dit_layers: int = 4, vae_dim: int = 32) -> tuple[Path, Path]:
    from benchmarks.load import make_data
    from diffusion.text_encoder import create_tiny_text_encoder
    from diffusion.vae import create_tiny_wan_vae

    data = make_data(tmp, n=64, per_shard=16, clip_frames=24, h=192, w=192)
    te = create_tiny_text_encoder(str(tmp / "t5"), dim=256, max_length=64, num_layers=4, num_heads=4)
    vae = create_tiny_wan_vae(str(tmp / "vae"), z_dim=8, base_dim=vae_dim)
    cfg = {
        "base": "tiny",
        "model": {"in_channels": 8, "out_channels": 8, "dim": 384, "ffn_dim": 1536, "num_heads": 6,
                  "num_layers": dit_layers, "text_dim": 256, "freq_dim": 64},
        "vae": {"kind": "wan", "path": vae, "space_to_depth": 1},
        "text": {"kind": "t5", "path": te, "dim": 256, "max_length": 64},
        "data": {"batch_size": batch, "num_frames": 9, "fps": 12.0, "buckets": [[64, 64]], "shuffle_buffer": 16},
        "train": {"steps": steps, "checkpoint_every": steps, "val_every": 0, "sample_every": 0,
                  "tensorboard": False, "ema_decay": 0.0},
    }
    path = tmp / "config.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return data, path


def _run(layout: str, data: Path, config: Path, out: Path, steps: int) -> list[tuple[float, float]]:
    """One `vfm-train fit`; (data + encoding seconds, whole seconds) of each step."""
    from diffusion.cli_train import main

    extra = {"replicated": ["--nproc", "4"], "colocated": ["--nproc", "4", "--set", "parallel.encoders=colocated"],
             "disjoint": ["--nproc", "5", "--encoder-ranks", "1"]}[layout]
    status = main(["fit", "--config", str(config), "--data", str(data), "--out", str(out), "--steps", str(steps),
                   "--dp", str(DP), "--cp", str(CP), *extra])
    if status != 0:
        raise RuntimeError(f"vfm-train fit ({layout}) exited with {status}")
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["data_time_s"], r["step_time_s"] + r["data_time_s"]) for r in recs if "step_time_s" in r]


def _probe(config: Path, data: Path, batch: int) -> dict:
    """One process: seconds (and encoder FLOPs) of a slot's DiT step, encoding and loading."""
    from torch.utils.flop_counter import FlopCounterMode

    from dataload.loader import build_loader
    from diffusion.config import load_config
    from diffusion.dit import VideoDiT
    from diffusion.encoders import Conditioner
    from diffusion.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_config(str(config))
    loader = build_loader([(str(data), 1.0)], cfg.data, rank=0, world_size=DP)
    it = iter(loader)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(3)]
    load_s = (time.perf_counter() - t0) / 3
    cond = Conditioner(cfg, cfg.text.path, torch.device("cpu"))
    cond(batches[0])
    t0 = time.perf_counter()
    latent = [cond(b) for b in batches]
    enc_s = (time.perf_counter() - t0) / 3
    with FlopCounterMode(display=False) as counter:
        cond(batches[0])
    enc_flops = counter.get_total_flops()
    trainer = Trainer(VideoDiT(cfg.model), cfg.train, cfg.flow, total_steps=10, null_text=cond.encode_text([""]))
    trainer.train_step(0, latent[0])
    t0 = time.perf_counter()
    for i, b in enumerate(latent):
        trainer.train_step(i + 1, b)
    dit_s = (time.perf_counter() - t0) / 3
    # context parallel: a CP rank runs the DiT on half the tokens (attention aside), plus its collectives
    return {"load": load_s, "encode": enc_s, "dit": dit_s, "enc_flops": enc_flops, "batch": batch}


def predict(p: dict, layout: str, cores: int) -> float:
    """Seconds per step of a layout from the probed costs (see the module doc)."""
    lane = CP
    dit = p["dit"] / CP  # each CP rank computes half the sequence
    if layout == "replicated":
        ranks = [p["load"] + p["encode"] + dit] * (DP * CP)
    elif layout == "colocated":
        ranks = [p["load"] + p["encode"] / lane + dit] * (DP * CP)
    else:
        backbone = [dit] * (DP * CP)
        encoder = DP * (p["load"] + p["encode"])
        return max(max(backbone), encoder, (sum(backbone) + encoder) / cores)
    return max(max(ranks), sum(ranks) / cores)


def encoder_flops_per_rank(p: dict, layout: str) -> dict[str, float]:
    f = p["enc_flops"]
    if layout == "replicated":
        return {"backbone rank": f}
    if layout == "colocated":
        return {"backbone rank": f / CP}
    return {"backbone rank": 0.0, "encoder rank": DP * f}


def run(args) -> BenchResult:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    global_batch = args.batch * DP
    with tempfile.TemporaryDirectory(prefix="vfm-hetero-video-") as tmp:
        tmp = Path(tmp)
        data, config = _setup(tmp, args.batch, args.steps, args.dit_layers, args.vae_dim)
        probe = _probe(config, data, args.batch)
        share = probe["encode"] / (probe["encode"] + probe["load"] + probe["dit"])
        rates: dict[str, list[float]] = {k: [] for k in LAYOUTS}
        shares: list[float] = []  # data + encoding over the whole step, replicated, as the runs measure it
        winners = []
        for r in range(args.rounds):
            this = {}
            for layout in LAYOUTS:
                timed = _run(layout, data, config, tmp / f"run-{layout}-{r}", args.steps)[-5:]
                times = [whole for _, whole in timed]
                if layout == "replicated":
                    shares.append(statistics.median(d / whole for d, whole in timed))
                this[layout] = global_batch / statistics.median(times)
                rates[layout].append(this[layout])
            winners.append(max(this, key=this.get))
    predicted = {k: predict(probe, k, cores) for k in LAYOUTS}
    model_winner = min(predicted, key=predicted.get)
    rows = []
    for k in LAYOUTS:
        flops = encoder_flops_per_rank(probe, k)
        rows.append({"layout": k, "samples_per_s": statistics.median(rates[k]),
                     "rounds": " ".join(f"{v:.2f}" for v in rates[k]),
                     "predicted_step_s": predicted[k], "predicted_samples_per_s": global_batch / predicted[k],
                     "encoder_GFLOP_per_rank": ", ".join(f"{n} {v / 1e9:.2f}" for n, v in flops.items())})
    agree = sum(w == model_winner for w in winners)
    ratios = {"colocated / replicated": statistics.median(rates["colocated"]) / statistics.median(rates["replicated"]),
              "disjoint / replicated": statistics.median(rates["disjoint"]) / statistics.median(rates["replicated"])}
    measured_share = statistics.median(shares)
    notes = [f"loading + encoding share of the replicated step, as measured in its runs: {measured_share:.0%}; "
             f"colocated can at best reach 1/(1 - share/2) = {1 / (1 - measured_share / 2):.2f}x",
             f"encoding share in one process: {share:.0%} (encode {probe['encode']:.3f} s, "
             f"load {probe['load']:.3f} s, DiT step {probe['dit']:.3f} s per slot batch of {args.batch})",
             f"measured winner per round: {', '.join(winners)}; the cost model picks {model_winner} "
             f"({agree} of {len(winners)} rounds agree); {cores} cores, dp {DP} x cp {CP}"]
    return BenchResult(name="hetero-video",
                       columns=["layout", "samples_per_s", "rounds", "predicted_step_s", "predicted_samples_per_s",
                                "encoder_GFLOP_per_rank"],
                       rows=rows, ratios=ratios, notes=notes,
                       extra={"encoding_share": share, "measured_share": measured_share, "model_winner": model_winner, "winners": winners,
                              "model_agrees": agree})
