"""hetero: the tiny multimodal LLM under three layouts on 2 gloo ranks, plus a cost model.

Layouts (same global batch, same models; the vision encoder is heavier than the LM, as in real MLLMs):
- `homogeneous`: one layout for both modules, DP=2 (encoder and LM on both ranks, pass-through boundary);
- `colocated-hetero`: encoder DP=2, LM CP=2 (Ulysses) on the same ranks (fan-in boundary);
- `non-colocated`: encoder on rank 0, LM on rank 1, microbatches pipelined through the P2P boundary.
Samples/s is measured with the contenders interleaved. The cost model predicts each layout's step time
from FLOPs and bytes per module per rank (analytic formulas below) and two rates calibrated on this
machine (single-thread matmul FLOP/s and gloo point-to-point bytes/s); the FLOPs are checked against
torch's FlopCounterMode on a real step and the bytes against those counted in parallel.comm.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.harness import BenchResult, median

LAYOUTS = ("homogeneous", "colocated-hetero", "non-colocated")


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=8, help="global samples per step")
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per timed repeat")


# ------------------------------------------------------------------------------------------- cost model
@dataclass
class Cost:
    """One rank's work in one step: module calls, samples' worth of FLOPs, bytes and messages sent."""

    enc_calls: int
    enc_samples: float  # full-sample equivalents of encoder work (FLOPs = 3 x forward per sample)
    lm_calls: int
    lm_samples: float
    bytes: float
    messages: int
    fe: float = 0.0  # forward FLOPs per sample
    fl: float = 0.0
    params: int = 0  # parameters this rank's optimizer steps (AdamW + clipping cost per parameter)

    @property
    def flops(self) -> float:
        return 3 * (self.enc_samples * self.fe + self.lm_samples * self.fl)

    def seconds(self, cal: dict) -> float:
        """Fixed cost per module call + FLOPs at the module's measured rate + bytes + message latency."""
        return (self.enc_calls * cal["enc"][0] + 3 * self.enc_samples * self.fe / cal["enc"][1]
                + self.lm_calls * cal["lm"][0] + 3 * self.lm_samples * self.fl / cal["lm"][1]
                + self.bytes / cal["byte_rate"] + self.messages * cal["latency"] + self.params * cal["opt"])


def module_flops(cfg) -> tuple[float, float]:
    """Forward matmul FLOPs per sample of (encoder incl. projector, LM) (multiply-add = 2)."""
    p, de, dl, s = cfg.patches, cfg.d_enc, cfg.d_lm, cfg.seq_len
    m = cfg.mlp_ratio
    enc = 2 * p * cfg.patch_dim * de
    enc += cfg.enc_layers * (2 * p * de * 3 * de + 2 * p * de * de + 2 * 2 * p * de * m * de + 4 * p * p * de)
    enc += 2 * p * de * dl + 2 * p * dl * dl
    lm = cfg.lm_layers * (2 * s * dl * 3 * dl + 2 * s * dl * dl + 2 * 2 * s * dl * m * dl + 4 * s * s * dl)
    lm += 2 * s * dl * cfg.vocab
    return float(enc), float(lm)


def param_count(cfg) -> tuple[int, int]:
    from parallel.examples.mllm import build_models

    enc, lm = build_models(cfg)
    return sum(p.numel() for p in enc.parameters()), sum(p.numel() for p in lm.parameters())


def predict(cfg, layout: str, batch: int, mbs: int, cal: dict):
    """Per-rank Cost of one step and the predicted step seconds."""
    fe, fl = module_flops(cfg)
    pe, pl = param_count(cfg)
    act = cfg.patches * cfg.d_lm * 4  # one sample's image tokens at the boundary (float32)
    allreduce = lambda n: n * 4 * 2 * (2 - 1) / 2  # noqa: E731  ring all-reduce on 2 ranks
    if layout == "homogeneous":
        cost = Cost(mbs, batch / 2, mbs, batch / 2, allreduce(pe) + allreduce(pl), 2, fe, fl, pe + pl)
        return [cost, cost], cost.seconds(cal)
    if layout == "colocated-hetero":  # LM: Ulysses halves heads per rank over the whole microbatch
        s, dl = cfg.seq_len, cfg.d_lm
        uly = 8 * (s // 2 + s % 2) * dl * 4 * (2 - 1) / 2 * cfg.lm_layers * batch  # q,k,v,out + grads
        gather = act * batch / 2 + act * batch * 2 * (2 - 1) / 2  # all-gather fwd, all-reduce bwd
        cost = Cost(mbs, batch / 2, mbs, batch / 2, allreduce(pe) + allreduce(pl) + uly + gather,
                    2 + mbs * (2 + 8 * cfg.lm_layers), fe, fl, pe + pl)
        return [cost, cost], cost.seconds(cal)
    enc = Cost(mbs, batch, 0, 0, act * batch, 2 * mbs, fe, fl, pe)
    lm = Cost(0, 0, mbs, batch, act * batch, mbs, fe, fl, pl)
    te, tl = enc.seconds(cal), lm.seconds(cal)
    # a two-stage pipeline: the slower stage runs back to back, the faster one fills and drains it
    return [enc, lm], max(te, tl) + min(te, tl) / mbs


def _module_probes(cfg) -> dict:
    """Callables running one module's fwd+bwd alone on 1 or 4 samples (timed among the contenders)."""
    import torch

    from parallel.examples.mllm import build_models, make_batch

    enc, lm = build_models(cfg, dtype=torch.float32)
    probes = {}
    for n in (1, 4):
        mb = make_batch(cfg, n, seed=0, dtype=torch.float32)
        img = enc(mb["patches"]).detach()
        probes[("enc", n)] = lambda mb=mb: enc(mb["patches"]).sum().backward()
        probes[("lm", n)] = lambda mb=mb, img=img: lm.loss_sum(img, mb["text"], mb["text_valid"]).backward()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-6)

    def opt_step():  # what the schedule does per module after the backward: norm, clip, step, zero
        for p in enc.parameters():
            p.grad = torch.ones_like(p)
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    probes[("opt", 0)] = opt_step
    return probes


def _rates(probe_times: dict, cfg) -> dict[str, tuple[float, float]]:
    """Per module: (fixed seconds per call, training FLOP/s) from the 1- and 4-sample medians."""
    fe, fl = module_flops(cfg)
    out = {}
    for key, f in (("enc", fe), ("lm", fl)):
        t1, t4 = median(probe_times[(key, 1)]), median(probe_times[(key, 4)])
        per_sample = max((t4 - t1) / 3, 1e-9)
        out[key] = (max(t1 - per_sample, 0.0), 3 * f / per_sample)
    out["opt"] = median(probe_times[("opt", 0)]) / sum(param_count(cfg)[:1])  # seconds per parameter
    return out


def _calibrate(rank):
    """gloo p2p bytes/s and per-message latency between the two ranks."""
    import time

    import torch
    import torch.distributed as dist

    def pingpong(n, reps):
        x = torch.zeros(n)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            if rank == 0:
                dist.send(x, 1)
                dist.recv(x, 1)
            else:
                dist.recv(x, 0)
                dist.send(x, 0)
        return (time.perf_counter() - t0) / (2 * reps)

    lat = pingpong(1, 20)
    big = pingpong(1 << 20, 5)
    return 4 * (1 << 20) / max(big - lat, 1e-9), lat


def _body(rank, world_size, batch, mbs, steps, repeats):
    import time

    import torch
    import torch.distributed as dist
    from torch.utils.flop_counter import FlopCounterMode

    from parallel.boundary import make_boundary
    from parallel.comm import CommStats
    from parallel.examples.mllm import bench, build_models, make_batch
    from parallel.layout import ParallelLayout
    from parallel.schedule import HeteroSchedule, Stage

    torch.set_num_threads(1)
    cfg = bench()
    specs = {"homogeneous": ((2, 1, 0), (2, 1, 0)), "colocated-hetero": ((2, 1, 0), (1, 2, 0)),
             "non-colocated": ((1, 1, 0), (1, 1, 1))}
    scheds, stats = {}, {}
    for name, (e, b) in specs.items():
        el = ParallelLayout("enc", dp=e[0], cp=e[1], rank_offset=e[2]).build("gloo")
        ll = ParallelLayout("lm", dp=b[0], cp=b[1], rank_offset=b[2]).build("gloo")
        stats[name] = CommStats()
        enc, lm = build_models(cfg, dtype=torch.float32)
        stages = [Stage(lay, m if lay.is_member else None,
                        torch.optim.AdamW(m.parameters(), lr=1e-4) if lay.is_member else None)
                  for lay, m in ((el, enc), (ll, lm))]
        scheds[name] = HeteroSchedule(stages[0], stages[1], make_boundary(el, ll, torch.float32, stats[name]),
                                      max_grad_norm=1.0, stats=stats[name])
    # the LM's CP attention counts its bytes into the same per-layout stats
    tasks = {name: _CountingTask(cfg, "ring", "ulysses", stats[name]) for name in specs}
    data = [[make_batch(cfg, batch // mbs, seed=10 * s + m, dtype=torch.float32) for m in range(mbs)]
            for s in range(steps)]

    def one(name):
        for step_batches in data:
            scheds[name].step(step_batches, tasks[name].encode, tasks[name].loss, tasks[name].count_tokens)

    counted = {}
    for name in specs:  # a counted (and warm-up) step per layout: FLOPs and bytes of one step
        stats[name].bytes_sent = stats[name].messages = 0
        with FlopCounterMode(display=False) as fc:
            scheds[name].step(data[0], tasks[name].encode, tasks[name].loss, tasks[name].count_tokens)
        counted[name] = {"flops": fc.get_total_flops(), "bytes": stats[name].bytes_sent,
                         "messages": stats[name].messages}
    times = {name: [] for name in specs}
    probes = _module_probes(cfg)
    probe_times = {k: [] for k in probes}
    for _ in range(repeats):
        for name in specs:
            dist.barrier()
            t0 = time.perf_counter()
            one(name)
            dist.barrier()
            times[name].append((time.perf_counter() - t0) / steps)
        # the cost model's compute rates, measured in the same rounds (both ranks busy, as in a step)
        for key, fn in probes.items():
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            probe_times[key].append(time.perf_counter() - t0)
    return {"times": times, "counted": counted, "rates": _rates(probe_times, cfg), "calibration": _calibrate(rank)}


class _CountingTask:
    """MLLMTask whose context-parallel handles count bytes into `stats`."""

    def __init__(self, cfg, enc_mode, lm_mode, stats):
        from parallel.examples.mllm import MLLMTask

        self.inner = MLLMTask(cfg, enc_mode, lm_mode)
        self.stats = stats

    def encode(self, model, mb, layout):
        return self.inner.encode(model, mb, layout)

    def loss(self, model, image_tokens, mb, layout):
        from parallel.examples.mllm import slot

        part = slot(mb, layout.coords()["dp"], layout.layout.dp)
        cp = layout.context_parallel(self.inner.lm_mode, stats=self.stats)
        return model.loss_sum(image_tokens, part["text"], part["text_valid"], cp)

    def count_tokens(self, mb, layout):
        return self.inner.count_tokens(mb, layout)


def run(args) -> BenchResult:
    from parallel.examples.mllm import bench
    from tests.helpers.distributed import run_ranks

    repeats = max(1, args.repeats)
    res = run_ranks(_body, world_size=2, deadline_s=3000,
                    kwargs={"batch": args.batch, "mbs": args.microbatches, "steps": args.steps, "repeats": repeats})
    cfg = bench()
    cal = {k: (max(r["rates"][k][0] for r in res), min(r["rates"][k][1] for r in res)) for k in ("enc", "lm")}
    cal["opt"] = max(r["rates"]["opt"] for r in res)
    cal["byte_rate"] = min(r["calibration"][0] for r in res)
    cal["latency"] = max(r["calibration"][1] for r in res)
    rows, predicted, measured = [], {}, {}
    for name in LAYOUTS:
        t = max(median(r["times"][name]) for r in res)
        costs, t_pred = predict(cfg, name, args.batch, args.microbatches, cal)
        predicted[name], measured[name] = t_pred, t
        for rank, (r, c) in enumerate(zip(res, costs)):
            cnt = r["counted"][name]
            rows.append({"layout": name, "rank": rank, "samples/s": args.batch / t if rank == 0 else None,
                         "step s": t if rank == 0 else None, "predicted s": t_pred if rank == 0 else None,
                         "model GFLOP": c.flops / 1e9, "counted GFLOP": cnt["flops"] / 1e9,
                         "model MB": c.bytes / 1e6, "counted MB": cnt["bytes"] / 1e6})
    best_pred = min(predicted, key=predicted.get)
    best_meas = min(measured, key=measured.get)
    ranked = sorted(predicted.values())
    margin = ranked[1] / ranked[0] - 1
    ratios = {f"{n} samples/s vs homogeneous": measured["homogeneous"] / measured[n] for n in LAYOUTS[1:]}
    notes = [f"calibrated in the same interleaved rounds (1 thread): encoder {cal['enc'][1] / 1e9:.2f} GFLOP/s + "
             f"{cal['enc'][0] * 1e3:.1f} ms per call, LM {cal['lm'][1] / 1e9:.2f} GFLOP/s + "
             f"{cal['lm'][0] * 1e3:.1f} ms per call, optimizer {cal['opt'] * 1e9:.0f} ns per parameter, "
             f"{cal['byte_rate'] / 1e6:.0f} MB/s p2p, "
             f"{cal['latency'] * 1e6:.0f} us per message",
             f"cost model picks {best_pred} (margin over the runner-up {margin:.0%}); measured winner {best_meas} "
             f"({'agree' if best_pred == best_meas else 'DISAGREE'})",
             f"global batch {args.batch} in {args.microbatches} microbatches; medians of {repeats} interleaved "
             f"repeats; counted GFLOP from torch FlopCounterMode (matmuls; it does not count the encoder's fused CPU "
             f"SDPA, which the model does), counted MB from parallel.comm (all-reduce/all-gather at ring volume)",
             "prediction error: " + ", ".join(f"{n} {predicted[n] / measured[n]:.2f}x" for n in LAYOUTS)]
    return BenchResult("hetero", ["layout", "rank", "samples/s", "step s", "predicted s", "model GFLOP",
                                  "counted GFLOP", "model MB", "counted MB"], rows, ratios, notes,
                       extra={"predicted_winner": best_pred, "measured_winner": best_meas,
                              "predicted_margin": margin})
