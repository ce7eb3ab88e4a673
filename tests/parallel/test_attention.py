"""Context-parallel attention on real gloo ranks against one-process float64 attention.

One 4-rank launch covers cp=2 (on a dp=2 x cp=2 layout, both lanes at once) and cp=4 (ulysses, ring,
usp=2x2), with and without padding, with and without a key mask, causal or not, and replicated K/V.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from tests.helpers.distributed import RankFailure, run_ranks

pytestmark = pytest.mark.distributed

B, H, D = 2, 4, 8


def reference_attention(q, k, v, key_valid=None, causal=False):
    """Textbook softmax attention (independent of parallel/), float64."""
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    allow = torch.ones(s.shape[-2:], dtype=torch.bool)
    if causal:
        allow = torch.tril(allow)
    allow = allow[None, None]
    if key_valid is not None:
        allow = allow & key_valid[:, None, None, :]
    s = s.masked_fill(~allow, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, dim=-1), v)


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def _case(cp, seq, masked, causal, kv_rep, seed):
    """Reference loss gradients and the shardable inputs of one case (same on every rank by seed)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, seq, H, D, generator=g, dtype=torch.float64)
    sk = 5 if kv_rep else seq
    k = torch.randn(B, sk, H, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, sk, H, D, generator=g, dtype=torch.float64)
    w = torch.randn(B, seq, H, D, generator=g, dtype=torch.float64)
    mask = None
    if masked:  # uneven valid key lengths per sample, at least one valid key each
        lens = [sk, max(1, sk - 3)] if not causal else [sk, sk - 2]
        mask = torch.arange(sk)[None, :] < torch.tensor(lens)[:, None]
    return q, k, v, w, mask


def attention_body(rank, world_size):
    import torch.distributed as dist

    from parallel.attention import cp_attention
    from parallel.layout import ParallelLayout
    from parallel.sequence import gather_sequence, shard_sequence

    torch.set_num_threads(1)
    lay2 = ParallelLayout("cp2", dp=2, cp=2).build("gloo")
    lay4 = ParallelLayout("cp4", cp=4, cp_ulysses=2).build("gloo")
    worst = 0.0
    cases = 0
    for built, modes in ((lay2, ["ulysses", "ring"]), (lay4, ["ulysses", "ring", "usp"])):
        for mode in modes:
            cp = built.context_parallel(mode)
            n = cp.size
            for seq in (4 * n, 4 * n - 3):  # divisible, and padded
                for masked in (False, True):
                    for causal, kv_rep in ((False, False), (True, False), (False, True)):
                        seed = 1000 + cases  # same order on every rank (hash() is salted per process)
                        q, k, v, w, mask = _case(n, seq, masked, causal, kv_rep, seed)
                        ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
                        ref = reference_attention(*ref_in, key_valid=mask, causal=causal)
                        (ref * w).sum().backward()

                        full = [t.clone().requires_grad_() for t in (q, k, v)]
                        group = cp.group
                        ql = shard_sequence(full[0], 1, group)
                        if kv_rep:
                            kl, vl = full[1], full[2]
                        else:
                            kl, vl = shard_sequence(full[1], 1, group), shard_sequence(full[2], 1, group)
                        out = cp_attention(ql, kl, vl, cp, kv_replicated=kv_rep, mask=mask, causal=causal,
                                           seq_len=seq)
                        wl = shard_sequence(w, 1, group)  # zero weight on padded query rows
                        (out * wl).sum().backward()
                        # output: gathered shards equal the reference
                        gathered = gather_sequence(out.detach(), 1, group, orig_len=seq)
                        errs = [rel(gathered, ref.detach())]
                        # input gradients: partial per rank, their sum over the cp group is the reference
                        for t, r_ in zip(full, ref_in):
                            gsum = t.grad.clone()
                            dist.all_reduce(gsum, group=group)
                            errs.append(rel(gsum, r_.grad))
                        cases += 1
                        if max(errs) > 1e-10:
                            raise AssertionError(f"cp={n} mode={mode} seq={seq} masked={masked} causal={causal}"
                                                 f" kv_replicated={kv_rep}: rel errors {errs}")
                        worst = max(worst, *errs)
    for built in (lay2, lay4):
        check_sequence(built.group("cp"), built.size_of("cp"))
    # 3 heads do not divide over Ulysses degree 2: ring fallback gives the same answer, or a clear error
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 6, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    ref = reference_attention(q, k, v)
    cp = lay2.context_parallel("ulysses")
    local = [shard_sequence(t, 1, cp.group) for t in (q, k, v)]
    out = gather_sequence(cp_attention(*local, cp), 1, cp.group)
    assert rel(out, ref) < 1e-12
    strict = lay2.context_parallel("ulysses", heads_fallback="error")
    try:
        cp_attention(*local, strict)
        raise AssertionError("heads_fallback='error' did not raise")
    except ValueError as exc:
        assert "3 heads do not divide" in str(exc)
    return {"cases": cases, "worst": worst}


def test_cp_attention_and_sequence_match_single_rank():
    results = run_ranks(attention_body, world_size=4, deadline_s=420)
    assert all(r["cases"] == results[0]["cases"] for r in results)
    assert results[0]["cases"] == 2 * 2 * 2 * 3 + 3 * 2 * 2 * 3
    assert max(r["worst"] for r in results) < 1e-10


def check_sequence(group, world_size):
    """shard_sequence / gather_sequence gradients under both gather conventions (7 tokens, padded)."""
    import torch.distributed as dist

    from parallel.sequence import gather_sequence, shard_sequence

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    w = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    ref = x.clone().requires_grad_()
    (torch.tanh(ref) * w).sum().backward()
    for grad, weight in (("sum", 1.0 / world_size), ("split", 1.0)):
        xx = x.clone().requires_grad_()
        local = torch.tanh(shard_sequence(xx, 1, group))
        assert local.shape[1] == -(-7 // world_size)
        full = gather_sequence(local, 1, group, orig_len=7, grad=grad)
        assert full.shape == x.shape
        (full * w).sum().mul(weight).backward()
        gsum = xx.grad.clone()
        dist.all_reduce(gsum, group=group)
        assert rel(gsum, ref.grad) < 1e-12, (grad, rel(gsum, ref.grad))


def failing_body(rank, world_size):
    from parallel.attention import cp_attention
    from parallel.layout import ParallelLayout

    cp = ParallelLayout("cp", cp=world_size).build("gloo").context_parallel("ring")
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    q = torch.randn(1, 4, 2, 4)
    cp_attention(q, q, q, cp)  # waits for rank 1's K/V, which never come


def test_failing_rank_fails_every_rank_without_hanging():
    t0 = time.monotonic()
    with pytest.raises(RankFailure) as info:
        run_ranks(failing_body, world_size=2)
    msg = str(info.value)
    assert "2 of 2 ranks failed" in msg and "fails on purpose" in msg
    assert time.monotonic() - t0 < 75


def _segment_reference(q, k, v, segments, key_valid=None, causal=False):
    """Each run of one segment id attends by itself (the textbook attention per run)."""
    out = torch.zeros_like(q)
    bounds = [0] + [i for i in range(1, len(segments)) if segments[i] != segments[i - 1]] + [len(segments)]
    for a, b in zip(bounds, bounds[1:]):
        kv = None if key_valid is None else key_valid[:, a:b]
        out[:, a:b] = reference_attention(q[:, a:b], k[:, a:b], v[:, a:b], kv, causal)
    return out


@pytest.mark.parametrize("masked,causal", [(False, False), (True, False), (False, True)])
def test_packed_segments_on_one_rank(masked, causal):
    """cp_attention with segments and no group: the per-segment kernel path (no mask) and the masked math
    (a key mask or causality as well) both attend within each segment only, forward and backward."""
    from parallel.attention import cp_attention

    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 11, H, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    segments = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    mask = torch.ones(1, 11, dtype=torch.bool)
    if masked:
        mask[0, [1, 8]] = False
    w = torch.randn(1, 11, H, D, generator=g, dtype=torch.float64)
    got = cp_attention(q, k, v, None, segments=segments, mask=mask if masked else None, causal=causal)
    grads = torch.autograd.grad((got * w).sum(), (q, k, v))
    want = _segment_reference(q, k, v, segments.tolist(), mask if masked else None, causal)
    ref_grads = torch.autograd.grad((want * w).sum(), (q, k, v))
    assert rel(got, want) < 1e-12
    for a, b in zip(grads, ref_grads):
        assert rel(a, b) < 1e-12
