"""cp-train: one full training step (forward, backward, clip, AdamW, EMA) of the DiT with context
parallel cp=2 on 2 gloo ranks, against one rank doing the same step alone.

Both ranks take part in every contender: for `1 rank` each rank trains its own unsharded copy on the
whole sample (one core each, as a lone rank would have), for `cp=2 ulysses|ring` they split the token
sequence of that same sample. Contenders are interleaved; the table shows the median step time (the
slower rank), tokens/s and the speed-up over one rank. Every contender starts from the same weights and
batch, so their first-step losses must agree (the column `loss rel diff` checks it).
"""

from __future__ import annotations

from benchmarks.harness import BenchResult, median


def add_arguments(parser) -> None:
    parser.add_argument("--frames", type=int, default=16, help="latent frames (16 x 16 x 16 = 4096 tokens)")
    parser.add_argument("--size", type=int, default=32, help="latent height = width (tokens = F x size/2 x size/2)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)


def _body(rank, world_size, frames, size, dim, layers, heads, repeats):
    import time

    import torch
    import torch.distributed as dist

    from diffusion.dit import DiTConfig, VideoDiT
    from diffusion.objective import FlowMatchingConfig
    from diffusion.optim import OptimConfig
    from diffusion.trainer import ParallelState, TrainConfig, Trainer, build_parallel_state

    torch.set_num_threads(1)
    mcfg = DiTConfig(in_channels=12, out_channels=12, dim=dim, ffn_dim=4 * dim, num_heads=heads, num_layers=layers,
                     text_dim=64, freq_dim=64, rope_max_seq_len=1024)
    tcfg = TrainConfig(steps=1000, ema_decay=0.99, optim=OptimConfig(lr=1e-4, grad_clip=1.0))
    flow = FlowMatchingConfig(caption_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    batch = {"latents": torch.randn(1, 12, frames, size, size, generator=g),
             "text": torch.randn(1, 16, 64, generator=g), "text_mask": torch.ones(1, 16, dtype=torch.bool)}

    def make(par):
        torch.manual_seed(0)
        return Trainer(VideoDiT(mcfg), tcfg, flow, total_steps=1000, par=par)

    trainers = {"1 rank": make(ParallelState()),
                "cp=2 ulysses": make(build_parallel_state(1, world_size, "ulysses")),
                "cp=2 ring": make(build_parallel_state(1, world_size, "ring"))}
    times = {k: [] for k in trainers}
    first_loss = {}
    for r in range(repeats + 1):  # the first round warms up
        for name, tr in trainers.items():
            dist.barrier()
            t0 = time.perf_counter()
            m = tr.train_step(r, batch)
            dt = torch.tensor(time.perf_counter() - t0, dtype=torch.float64)
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
            if r == 0:
                first_loss[name] = m["loss"]
            else:
                times[name].append(float(dt))
    return {"times": times, "first_loss": first_loss}


def run(args) -> BenchResult:
    from tests.helpers.distributed import run_ranks

    out = run_ranks(_body, 2, {"frames": args.frames, "size": args.size, "dim": args.dim, "layers": args.layers,
                               "heads": args.heads, "repeats": args.repeats}, deadline_s=1800)[0]
    tokens = args.frames * (args.size // 2) ** 2
    base = median(out["times"]["1 rank"])
    ref_loss = out["first_loss"]["1 rank"]
    rows = []
    for name, ts in out["times"].items():
        t = median(ts)
        rows.append({"contender": name, "ranks": 1 if name == "1 rank" else 2, "tokens": tokens,
                     "step s (median)": t, "tokens/s": tokens / t, "speed-up": base / t,
                     "loss rel diff": abs(out["first_loss"][name] - ref_loss) / abs(ref_loss)})
    return BenchResult(
        name="cp-train",
        columns=["contender", "ranks", "tokens", "step s (median)", "tokens/s", "speed-up", "loss rel diff"],
        rows=rows,
        ratios={f"{r['contender']} vs 1 rank (speed-up)": r["speed-up"] for r in rows if r["ranks"] == 2},
        notes=[f"DiT dim {args.dim}, {args.layers} blocks, {args.heads} heads; latents 12 x {args.frames} x "
               f"{args.size} x {args.size}; float32, gloo, 1 thread per rank; median of {args.repeats}"],
    )
