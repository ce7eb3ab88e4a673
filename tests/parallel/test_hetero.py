"""Boundary communicators + heterogeneous schedules against one-process float64 training.

One 4-rank launch runs every case: fan-in / fan-out / equal, colocated and non-colocated, destination
CP 1 and 2, 1 and 4 microbatches, uneven loss masks, source replicas. Each case trains the tiny
multimodal LLM of parallel/examples for 3 AdamW steps with clipping active and compares the loss,
every parameter gradient (first step) and the weights after 3 steps with the reference.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.distributed import run_ranks

pytestmark = pytest.mark.distributed

MAX_NORM = 0.05  # well under the tiny model's gradient norm, so clipping is active
STEPS = 3
MB_BATCH = 4  # samples per global microbatch

# name, encoder (dp, cp, offset), backbone (dp, cp, offset), microbatches, LM cp mode, expected kind
CASES = [
    ("colo fan-in dst-cp2 (enc dp4 | lm cp2 x dp2)", (4, 1, 0), (2, 2, 0), 1, "ring", "fan_in"),
    ("colo fan-in dst-cp2 mb4 ulysses", (4, 1, 0), (2, 2, 0), 4, "ulysses", "fan_in"),
    ("colo fan-in 2 ranks", (2, 1, 0), (1, 2, 0), 4, "ring", "fan_in"),
    ("colo fan-out enc-cp2", (1, 2, 0), (2, 1, 0), 1, "ring", "fan_out"),
    ("colo fan-out 4 ranks mb4", (2, 2, 0), (4, 1, 0), 4, "ring", "fan_out"),
    ("colo equal dst-cp1", (2, 1, 0), (2, 1, 0), 1, "ring", "equal"),
    ("colo equal dst-cp2 mb4", (2, 2, 0), (2, 2, 0), 4, "ulysses", "equal"),
    ("p2p fan-in dst-cp2 (enc 0-1 | lm 2-3)", (2, 1, 0), (1, 2, 2), 1, "ring", "p2p"),
    ("p2p fan-in dst-cp2 mb4", (2, 1, 0), (1, 2, 2), 4, "ulysses", "p2p"),
    ("p2p fan-in dst-cp1 mb4", (2, 1, 0), (1, 1, 2), 4, "ring", "p2p"),
    ("p2p fan-out dst-cp1", (1, 1, 0), (2, 1, 1), 1, "ring", "p2p"),
    ("p2p fan-out dst-cp1 mb4", (1, 1, 0), (2, 1, 1), 4, "ring", "p2p"),
    ("p2p equal dst-cp2 mb4", (1, 1, 0), (1, 2, 1), 4, "ring", "p2p"),
    ("p2p equal dst-cp1", (2, 1, 0), (2, 1, 2), 1, "ring", "p2p"),
    ("p2p fan-out src-cp2 replicas", (1, 2, 0), (2, 1, 2), 4, "ring", "p2p"),
]


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def _reference(cfg, batches):
    """Loss per step, first-step gradients and final weights of one-process training."""
    from parallel.examples.mllm import build_models, loss_weights, reference_loss_sum

    enc, lm = build_models(cfg)
    params = list(enc.parameters()) + list(lm.parameters())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1) for m in (enc, lm)]
    losses, grads = [], None
    for step_batches in batches:
        n = sum(loss_weights(cfg, mb["text_valid"]).sum() for mb in step_batches)
        loss = sum(reference_loss_sum(enc, lm, mb) for mb in step_batches) / n
        loss.backward()
        if grads is None:
            grads = {"enc": {k: p.grad.clone() for k, p in enc.named_parameters()},
                     "lm": {k: p.grad.clone() for k, p in lm.named_parameters()}}
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        assert norm > 2 * MAX_NORM, "clipping must be active"
        for o in opts:
            o.step()
            o.zero_grad()
        losses.append(loss.item())
    return losses, grads, {"enc": enc.state_dict(), "lm": lm.state_dict()}


def hetero_body(rank, world_size, cases):
    from parallel.boundary import make_boundary
    from parallel.examples.mllm import MLLMTask, build_models, make_batch, tiny
    from parallel.layout import ParallelLayout
    from parallel.schedule import HeteroSchedule, Stage

    torch.set_num_threads(1)
    cfg = tiny()
    report = []
    for ci, (name, e, b, n_mb, lm_mode, kind) in enumerate(cases):
        batches = [[make_batch(cfg, MB_BATCH, seed=100 * ci + 10 * s + m) for m in range(n_mb)]
                   for s in range(STEPS)]
        ref_losses, ref_grads, ref_weights = _reference(cfg, batches)
        enc_l = ParallelLayout("enc", dp=e[0], cp=e[1], rank_offset=e[2]).build("gloo")
        lm_l = ParallelLayout("lm", dp=b[0], cp=b[1], rank_offset=b[2]).build("gloo")
        boundary = make_boundary(enc_l, lm_l)
        if kind != "p2p" and enc_l.is_member:
            assert boundary.kind == kind, (name, boundary.kind)
        enc, lm = build_models(cfg)
        stages = []
        for lay, model in ((enc_l, enc), (lm_l, lm)):
            on = lay.is_member
            stages.append(Stage(lay, model if on else None,
                                torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1) if on else None))
        sched = HeteroSchedule(stages[0], stages[1], boundary, max_grad_norm=MAX_NORM)
        task = MLLMTask(cfg, enc_mode="ring", lm_mode=lm_mode)
        errs = []
        for s, step_batches in enumerate(batches):
            loss_acc, n_tok = sched.forward_backward(step_batches, task.encode, task.loss, task.count_tokens)
            sched.finalize_gradients()
            if s == 0:  # every parameter's gradient, on every rank that holds the module
                for key, st in (("enc", stages[0]), ("lm", stages[1])):
                    if st.active:
                        for pname, p in st.model.named_parameters():
                            errs.append((f"grad {key}.{pname}", rel(p.grad, ref_grads[key][pname])))
            res = sched.optimizer_step(loss_acc, n_tok)
            assert not res.skipped
            errs.append((f"loss step {s}", abs(res.loss - ref_losses[s]) / abs(ref_losses[s])))
        for key, st in (("enc", stages[0]), ("lm", stages[1])):
            if st.active:
                for pname, t in st.model.state_dict().items():
                    errs.append((f"weight {key}.{pname}", rel(t, ref_weights[key][pname])))
        bad = [(what, err) for what, err in errs if not err < 1e-10]
        if bad:
            raise AssertionError(f"case {name!r}: {bad[:6]}")
        report.append((name, max((err for _, err in errs), default=0.0), len(errs)))
    return {"cases": report, "skip": check_nonfinite_skip(rank)}


def test_boundaries_and_schedules_match_reference():
    results = run_ranks(hetero_body, world_size=4, kwargs={"cases": CASES}, deadline_s=420)
    for rank_report in results:
        assert [r[0] for r in rank_report["cases"]] == [c[0] for c in CASES]
        assert all(r[1] < 1e-10 for r in rank_report["cases"])
    # the encoder (rank 0) had NaN gradients: it and the LM (rank 1) both skipped, weights untouched;
    # ranks 2-3 hold neither module and still agreed
    assert [r["skip"] for r in results] == [(True, True), (True, True), (True, None), (True, None)]


def check_nonfinite_skip(rank):
    """A NaN gradient in the encoder makes the LM skip the step too (they agree on it)."""
    from parallel.boundary import make_boundary
    from parallel.examples.mllm import MLLMTask, build_models, make_batch, tiny
    from parallel.layout import ParallelLayout
    from parallel.schedule import HeteroSchedule, Stage

    cfg = tiny()
    enc_l = ParallelLayout("enc", dp=1).build("gloo")
    lm_l = ParallelLayout("lm", dp=1, rank_offset=1).build("gloo")
    enc, lm = build_models(cfg)
    enc.pos.register_hook(lambda g: g * float("nan"))  # poisons the encoder's gradients only
    mine = enc if rank == 0 else lm if rank == 1 else None
    before = None if mine is None else {k: v.clone() for k, v in mine.state_dict().items()}
    stages = [Stage(lay, m if lay.is_member else None, torch.optim.AdamW(m.parameters()) if lay.is_member else None)
              for lay, m in ((enc_l, enc), (lm_l, lm))]
    sched = HeteroSchedule(stages[0], stages[1], make_boundary(enc_l, lm_l), max_grad_norm=1.0)
    task = MLLMTask(cfg)
    res = sched.step([make_batch(cfg, 2, seed=1)], task.encode, task.loss, task.count_tokens)
    unchanged = None if mine is None else all(torch.equal(before[k], v) for k, v in mine.state_dict().items())
    return res.skipped, unchanged
