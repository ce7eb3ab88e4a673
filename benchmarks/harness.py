"""Timing and reporting shared by every benchmark.

A benchmark module defines `add_arguments(parser)` (optional) and `run(args) -> BenchResult`. Every
contender is timed on the same inputs in one run, `repeats` times (5 by default), interleaved so that
machine noise hits every contender alike; the table shows medians and ratios against a named anchor.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class BenchResult:
    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": self.name, "rows": self.rows, "ratios": self.ratios, "notes": self.notes,
                **self.extra}

    def table(self) -> str:
        cols = self.columns
        cells = [[_fmt(r.get(c)) for c in cols] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
        out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
               "  ".join("-" * w for w in widths)]
        out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        if self.ratios:
            out.append("")
            out += [f"{k}: {v:.3f}x" for k, v in self.ratios.items()]
        out += self.notes
        return "\n".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def time_interleaved(contenders: dict[str, Callable[[], Any]], repeats: int = 5,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each contender, `repeats` times, round-robin so noise is shared."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_result(result: BenchResult, as_json: bool) -> None:
    print(f"== {result.name} ==")
    print(result.table())
    if as_json:
        print(json.dumps(result.to_json()))
