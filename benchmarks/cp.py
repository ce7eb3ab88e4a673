"""cp: context-parallel attention forward+backward on 2 gloo ranks against one rank.

Contenders, interleaved on the same inputs (B=1, float32, 1 thread per rank):
- `1 rank`: parallel's local attention over the whole sequence on one rank: the same fused kernel the
  CP modes run per block (torch's CPU flash attention, which also returns the LSE), so the ratio is the
  parallel speed-up;
- `ulysses`, `ring`, `usp` over the cp group (usp is Ulysses x ring = 2x1 on 2 ranks, 2x2 with --world 4).
Both single-rank contenders run on every rank at once (one core each), so each sees one core, as a lone
rank would. Bytes: what each rank sent (counted in parallel.comm) against the all-to-all bound
8(P-1)/P x S/P x H x D x 4 bytes: every rank must ship away the (P-1)/P share of q, k, v and out that it
does not attend to itself, and the same for their gradients in backward.
"""

from __future__ import annotations

from benchmarks.harness import BenchResult, median


def add_arguments(parser) -> None:
    parser.add_argument("--seqs", type=int, nargs="+", default=[4096, 8192, 16384], help="sequence lengths")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--world", type=int, default=2, choices=[2, 4], help="ranks (usp is 2x2 with 4)")


def expected_bytes(mode: str, seq: int, heads: int, dim: int, world: int, ulysses: int) -> int:
    """Bytes one rank sends for one forward+backward, from the algorithms' message sizes."""
    unit = seq // world * heads * dim * 4
    if mode == "ulysses":
        return 8 * unit * (world - 1) // world
    if mode == "ring":
        return (6 * world - 4) * unit  # K,V (P-1) times each way, dK,dV home after P shifts
    ring = world // ulysses
    return 8 * unit * (ulysses - 1) // ulysses + ((6 * ring - 4) * unit if ring > 1 else 0)


def _body(rank, world_size, seqs, heads, dim, repeats):
    import time

    import torch
    import torch.distributed as dist

    from parallel.attention import cp_attention
    from parallel.comm import CommStats
    from parallel.layout import ParallelLayout
    from parallel.local_attention import local_attention

    torch.set_num_threads(1)
    built = ParallelLayout("cp", cp=world_size, cp_ulysses=2).build("gloo")
    rows = []
    for seq in seqs:
        g = torch.Generator().manual_seed(seq)
        full = [torch.randn(1, seq, heads, dim, generator=g) for _ in range(3)]
        per = seq // world_size
        local = [t[:, rank * per:(rank + 1) * per].clone() for t in full]
        stats = {m: CommStats() for m in ("ulysses", "ring", "usp")}
        cps = {m: built.context_parallel(m, stats=stats[m]) for m in stats}

        def single(fn, full=full):
            def go():
                q, k, v = (t.clone().requires_grad_() for t in full)
                fn(q, k, v).sum().backward()
            return go

        def parallel_fn(mode, local=local, cps=cps):
            def go():
                q, k, v = (t.clone().requires_grad_() for t in local)
                cp_attention(q, k, v, cps[mode]).sum().backward()
            return go

        contenders = {
            "1 rank": single(lambda q, k, v: local_attention(q, k, v, dim ** -0.5)),
            "ulysses": parallel_fn("ulysses"),
            "ring": parallel_fn("ring"),
            "usp": parallel_fn("usp"),
        }
        times = {k: [] for k in contenders}
        warm = 1 if seq == seqs[0] else 0  # one untimed round before the first length warms everything
        for rep in range(repeats + warm):
            for name, fn in contenders.items():
                dist.barrier()
                t0 = time.perf_counter()
                fn()
                dist.barrier()
                if rep >= warm:
                    times[name].append(time.perf_counter() - t0)
        sent = {m: stats[m].bytes_sent // (repeats + warm) for m in stats}
        rows.append({"seq": seq, "times": times, "sent": sent})
    return rows


def run(args) -> BenchResult:
    from tests.helpers.distributed import run_ranks

    repeats = max(1, args.repeats)
    results = run_ranks(_body, world_size=args.world, deadline_s=3000,
                        kwargs={"seqs": args.seqs, "heads": args.heads, "dim": args.head_dim, "repeats": repeats})
    rows = []
    ratios = {}
    ulysses = 2
    for res in results[0]:
        seq, times = res["seq"], res["times"]
        base = median(times["1 rank"])
        unit_bound = 8 * (seq // args.world * args.heads * args.head_dim * 4) * (args.world - 1) // args.world
        flops = 3 * 4 * seq * seq * args.heads * args.head_dim  # fwd (QK^T, PV) + ~2x for backward
        for name, ts in times.items():
            t = median(ts)
            mode = name if name in res["sent"] else None
            sent = res["sent"][mode] if mode else 0
            expect = expected_bytes(mode, seq, args.heads, args.head_dim, args.world, ulysses) if mode else 0
            if mode and sent != expect:
                raise RuntimeError(f"{mode} at seq {seq}: counted {sent} bytes, the algorithm sends {expect}")
            rows.append({"seq": seq, "contender": name, "ranks": args.world if mode else 1,
                         "fwd+bwd s": t, "speedup vs 1 rank": base / t,
                         "GFLOP/s (all ranks)": flops / t / 1e9,
                         "MB sent/rank": sent / 1e6 if mode else None,
                         "x all-to-all bound": sent / unit_bound if mode else None})
            if mode:
                ratios[f"{mode} @ {seq} vs 1 rank"] = base / t
    notes = [f"B=1, heads={args.heads}, head_dim={args.head_dim}, float32, gloo, {args.world} ranks x 1 thread; "
             f"medians of {repeats} interleaved repeats",
             "bytes are counted in parallel.comm and checked equal to the algorithms' message sizes",
             "usp = Ulysses 2 x ring {}".format(args.world // 2)]
    return BenchResult("cp", ["seq", "contender", "ranks", "fwd+bwd s", "speedup vs 1 rank",
                              "GFLOP/s (all ranks)", "MB sent/rank", "x all-to-all bound"], rows, ratios, notes)
