"""`python -m benchmarks pack` runs small and reports what it promises: the plans come from the loader's
planner (packs never over the budget, every sample trained once) and packing wastes less of the budget."""

from __future__ import annotations

import json


def test_pack_plans_cover_the_corpus_within_the_budget():
    from benchmarks.pack import BUCKETS, corpus, plans

    which = corpus(40, seed=3)
    tokens = [BUCKETS[b][0] * (BUCKETS[b][1] // 2) * (BUCKETS[b][2] // 2) for b in which]
    steps = plans(which, 2000, 2, (1, 2, 2))
    for name, batches in steps.items():
        assert sorted(i for ids in batches for i in ids) == list(range(40)), name
    assert all(sum(tokens[i] for i in ids) <= 2000 for ids in steps["packed"])
    assert all(len({which[i] for i in ids}) == 1 for ids in steps["bucketed"])  # one bucket per batch
    assert len(steps["packed"]) < len(steps["bucketed"])


def test_pack_benchmark_runs_small(capsys):
    from benchmarks.__main__ import main

    assert main(["pack", "--samples", "4", "--dim", "32", "--layers", "1", "--budget-samples", "1",
                 "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["contender"]: r for r in result["rows"]}
    assert set(rows) == {"bucketed-padded", "bucketed", "packed"}
    assert all(r["useful_tokens_per_s"] > 0 for r in rows.values())
    assert rows["packed"]["padding_fraction"] < rows["bucketed-padded"]["padding_fraction"]
