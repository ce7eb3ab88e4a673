"""`python -m benchmarks pack`: useful tokens trained per second, packed against bucketed-padded batches.

The corpus is mixed like real video data: latents of three aspect ratios, two durations and one-frame
images, drawn with a seed. Every contender trains the same DiT (forward + backward of the flow-matching
loss) over the whole corpus once per repetition, at the same token budget per step:
- bucketed-padded (the anchor): the loader's bucket plan (each batch one bucket, `budget // static`
  samples), every sample zero-padded to one static shape that holds every bucket (what stacking mixed
  shapes without packing needs), the padding masked out of the loss;
- bucketed: the same batches at their own bucket's shape (dynamic shapes, no padding computed, but a
  batch of images fills little of the budget);
- packed: the loader's first-fit-decreasing packs of at most `budget` tokens, one sequence per step
  (block-diagonal attention, no padding computed).
Useful tokens are the samples' real tokens; the padding fraction is the share of the steps' token budget
that holds no real token. Both batch plans come from `dataload.loader.plan`, as training uses them.
"""

from __future__ import annotations

import math
import random

from benchmarks.harness import BenchResult, median, time_interleaved

# latent (frames, height, width) buckets and how often each occurs: 3 aspect ratios x 2 durations of
# video, and one-frame images of the same 3 aspect ratios
BUCKETS = [(5, 24, 40), (5, 40, 24), (5, 32, 32), (3, 24, 40), (3, 40, 24), (3, 32, 32),
           (1, 24, 40), (1, 40, 24), (1, 32, 32)]
WEIGHTS = [3, 1, 2, 3, 1, 2, 3, 1, 2]


def add_arguments(p) -> None:
    p.add_argument("--samples", type=int, default=24, help="samples in the mixed corpus")
    p.add_argument("--dim", type=int, default=64, help="DiT width")
    p.add_argument("--layers", type=int, default=2, help="DiT blocks")
    p.add_argument("--budget-samples", type=int, default=2,
                   help="the token budget per step, in samples of the static padded shape")


def corpus(n: int, seed: int = 0) -> list[int]:
    """Bucket index of each sample."""
    rng = random.Random(seed)
    return rng.choices(range(len(BUCKETS)), weights=WEIGHTS, k=n)


def plans(buckets_of: list[int], budget: int, batch_size: int, patch) -> dict[str, list[list[int]]]:
    """Sample ids per step: the bucket plan and the packing plan of dataload.loader.plan."""
    from dataload.loader.config import LoaderConfig
    from dataload.loader.plan import PlanContext, make_batches

    out = {}
    for name, pack in (("bucketed", None), ("packed", budget)):
        cfg = LoaderConfig(batch_size=batch_size, num_frames=1, buckets=BUCKETS, patch=patch, pack_tokens=pack,
                           shuffle_buffer=1, remainder="pad", pack_window=len(buckets_of))
        tokens = [cfg.tokens(BUCKETS[b]) for b in buckets_of]
        ctx = PlanContext(cfg, [1.0], [[list(range(len(buckets_of)))]], list(buckets_of), tokens)
        out[name] = [pb.real_gids() for pb in make_batches(ctx, list(range(len(buckets_of))))]
    return out


def run(args) -> BenchResult:
    import torch

    from diffusion.dit import DiTConfig, VideoDiT
    from diffusion.objective import FlowMatching

    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=4, out_channels=4, dim=args.dim, ffn_dim=4 * args.dim, num_heads=4,
                    num_layers=args.layers, text_dim=32, freq_dim=32, rope_max_seq_len=64)
    model = VideoDiT(cfg)
    pt, ph, pw = cfg.patch_size
    static = tuple(max(b[i] for b in BUCKETS) for i in range(3))  # holds every bucket
    static_tokens = math.prod(s // p for s, p in zip(static, cfg.patch_size))
    budget = args.budget_samples * static_tokens
    tokens = {b: math.prod(s // p for s, p in zip(b, cfg.patch_size)) for b in BUCKETS}
    which = corpus(args.samples)
    g = torch.Generator().manual_seed(1)
    latents = [torch.randn(4, *BUCKETS[b], generator=g) for b in which]
    targets = [torch.randn_like(x) for x in latents]
    text = torch.randn(len(which), 8, 32, generator=g)
    steps = plans(which, budget, args.budget_samples, cfg.patch_size)
    real = sum(tokens[BUCKETS[b]] for b in which)
    flow = FlowMatching()

    def t_of(ids):
        return torch.linspace(100.0, 900.0, len(ids))

    def padded_epoch():
        for ids in steps["bucketed"]:
            x = torch.zeros(len(ids), 4, *static)
            y = torch.zeros_like(x)
            m = torch.zeros(len(ids), 1, *static)
            for j, i in enumerate(ids):
                f, h, w = latents[i].shape[1:]
                x[j, :, :f, :h, :w] = latents[i]
                y[j, :, :f, :h, :w] = targets[i]
                m[j, :, :f, :h, :w] = 1.0
            loss = flow.loss(model(x, t_of(ids), text[ids]), y, m)
            loss.backward()
        model.zero_grad(set_to_none=True)

    def bucketed_epoch():
        for ids in steps["bucketed"]:
            x = torch.stack([latents[i] for i in ids])
            loss = flow.loss(model(x, t_of(ids), text[ids]), torch.stack([targets[i] for i in ids]))
            loss.backward()
        model.zero_grad(set_to_none=True)

    def packed_epoch():
        for ids in steps["packed"]:
            out = model([latents[i] for i in ids], t_of(ids), text[ids])
            count = sum(latents[i].numel() for i in ids)
            flow.packed_loss(out, [targets[i] for i in ids], None, count).backward()
        model.zero_grad(set_to_none=True)

    contenders = {"bucketed-padded": padded_epoch, "bucketed": bucketed_epoch, "packed": packed_epoch}
    times = time_interleaved(contenders, args.repeats)
    computed = {"bucketed-padded": len(steps["bucketed"]) * args.budget_samples * static_tokens,
                "bucketed": real, "packed": real}
    rows = []
    for name in contenders:
        n_steps = len(steps["packed" if name == "packed" else "bucketed"])
        t = median(times[name])
        rows.append({"contender": name, "steps": n_steps, "useful_tokens_per_s": real / t,
                     "padding_fraction": 1.0 - real / (n_steps * budget), "computed_tokens": computed[name],
                     "epoch_s": t})
    anchor = rows[0]["useful_tokens_per_s"]
    ratios = {f"{r['contender']} / bucketed-padded useful tokens/s": r["useful_tokens_per_s"] / anchor
              for r in rows[1:]}
    notes = [f"corpus: {len(which)} samples, {real} real tokens ({sum(BUCKETS[b][0] == 1 for b in which)} images); "
             f"token budget {budget} per step ({args.budget_samples} x static {static} = {static_tokens} tokens); "
             f"DiT dim {args.dim}, {args.layers} blocks; median of {args.repeats}"]
    return BenchResult("pack", ["contender", "steps", "useful_tokens_per_s", "padding_fraction", "computed_tokens",
                                "epoch_s"], rows, ratios, notes,
                       extra={"budget": budget, "real_tokens": real})
