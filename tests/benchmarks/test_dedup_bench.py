"""`python -m benchmarks dedup` stays alive: small sizes, both signals, the scalable method agreeing with
all-pairs and finding the planted copies."""

from __future__ import annotations

import argparse

from benchmarks import dedup


def test_dedup_benchmark_small():
    parser = argparse.ArgumentParser()
    dedup.add_arguments(parser)
    args = parser.parse_args(["--hash-sizes", "1000,3000", "--embed-sizes", "1000", "--all-pairs-max", "1000"])
    args.repeats = 1
    result = dedup.run(args)
    assert result.extra["same_as_all_pairs"] == {"hashes 1000": True, "embeddings 1000": True}
    methods = {(r["signal"], r["items"], r["method"]) for r in result.rows}
    assert ("hashes", 3000, "bands / sampled k-means") in methods and ("hashes", 3000, "all-pairs") not in methods
    assert all(r["planted_found"] == 1.0 for r in result.rows)
    assert any("extrapolated" in n for n in result.notes)
