"""Train the tiny multimodal LLM through the hetero core and compare with one process.

    python -m parallel.examples.train_mllm [--layout colocated|non-colocated] [--steps N]

colocated: encoder DP=4 and LM CP=2 x DP=2 on the same 4 ranks (fan-in boundary).
non-colocated: encoder DP=2 on ranks 0-1, LM CP=2 on ranks 2-3 (P2P boundary, 4 microbatches in flight).
Prints each step's loss and gradient norm beside the single-process float64 reference.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

import torch

LAYOUTS = {"colocated": ((4, 1, 0), (2, 2, 0), 1), "non-colocated": ((2, 1, 0), (1, 2, 2), 4)}
BATCH, MAX_NORM, LR = 4, 0.05, 1e-2


def _batches(cfg, steps: int, mbs: int):
    from parallel.examples.mllm import make_batch

    return [[make_batch(cfg, BATCH, seed=10 * s + m) for m in range(mbs)] for s in range(steps)]


def reference(steps: int, mbs: int) -> list[tuple[float, float]]:
    from parallel.examples.mllm import build_models, loss_weights, reference_loss_sum, tiny

    cfg = tiny()
    enc, lm = build_models(cfg)
    params = [*enc.parameters(), *lm.parameters()]
    opt = torch.optim.AdamW(params, lr=LR)
    out = []
    for step in _batches(cfg, steps, mbs):
        n = sum(loss_weights(cfg, mb["text_valid"]).sum() for mb in step)
        loss = sum(reference_loss_sum(enc, lm, mb) for mb in step) / n
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        opt.step()
        opt.zero_grad()
        out.append((loss.item(), norm.item()))
    return out


def _rank(rank: int, world: int, init_file: str, layout: str, steps: int, queue) -> None:
    import torch.distributed as dist

    from parallel.boundary import make_boundary
    from parallel.examples.mllm import MLLMTask, build_models, tiny
    from parallel.layout import ParallelLayout
    from parallel.schedule import HeteroSchedule, Stage

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        e, b, mbs = LAYOUTS[layout]
        enc_l = ParallelLayout("encoder", dp=e[0], cp=e[1], rank_offset=e[2]).build("gloo")
        lm_l = ParallelLayout("lm", dp=b[0], cp=b[1], rank_offset=b[2]).build("gloo")
        cfg = tiny()
        enc, lm = build_models(cfg)
        stages = [Stage(lay, m if lay.is_member else None,
                        torch.optim.AdamW(m.parameters(), lr=LR) if lay.is_member else None)
                  for lay, m in ((enc_l, enc), (lm_l, lm))]
        sched = HeteroSchedule(stages[0], stages[1], make_boundary(enc_l, lm_l), MAX_NORM)
        task = MLLMTask(cfg, lm_mode="ring")
        results = [sched.step(step, task.encode, task.loss, task.count_tokens) for step in _batches(cfg, steps, mbs)]
        if rank == 0:
            queue.put([(r.loss, r.grad_norm) for r in results])
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=list(LAYOUTS), default="colocated")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.steps < 1:
        print("error: --steps must be >= 1", file=sys.stderr)
        return 2
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init")
        procs = [ctx.Process(target=_rank, args=(r, 4, init, args.layout, args.steps, queue)) for r in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
        if any(p.exitcode != 0 for p in procs):
            print(f"error: a rank failed (exit codes {[p.exitcode for p in procs]})", file=sys.stderr)
            return 1
    got = queue.get(timeout=5)
    ref = reference(args.steps, LAYOUTS[args.layout][2])
    print(f"{'step':>4}  {'loss (4 ranks)':>16}  {'loss (1 process)':>16}  {'grad norm':>10}  {'reference':>10}")
    for i, ((loss, n), (rl, rn)) in enumerate(zip(got, ref)):
        print(f"{i:>4}  {loss:>16.12f}  {rl:>16.12f}  {n:>10.6f}  {rn:>10.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
