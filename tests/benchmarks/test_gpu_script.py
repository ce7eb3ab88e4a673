"""`python -m benchmarks gpu --device cpu` stays alive in CI: every correctness check that can run on the
CPU runs (small shapes) and passes, and the figures are produced."""

from __future__ import annotations

import json


def test_gpu_script_on_the_cpu(capsys):
    from benchmarks.__main__ import main

    assert main(["gpu", "--device", "cpu", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "gpu" and result["failed"] == []
    checks = {r["check"]: r for r in result["rows"]}
    assert checks["DiT bf16 vs float32 (rel. L2)"]["ok"] is True
    assert any(c.startswith("ring attention") and r["ok"] for c, r in checks.items())
    assert any(c.startswith("ulysses attention") and r["ok"] for c, r in checks.items())
    assert result["tokens_per_s"] > 0 and result["decode_fps"]["pyav"] > 0
