"""The order a run hands its sources to the workers.

Largest files first, so the last sources to finish are small and no worker idles long at the end while
another finishes a big one. File size is a poor guide to cost for the tail, though: 50 frames of 720p
in a 47 KB file cost more than 250 frames of 640x272 in 500 KB. So the last sources, those whose order
decides how the run ends, are ordered by the pixels their headers declare (read on the workers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import median
from typing import TypeVar

from curate.stages.probe.cost import header_costs

T = TypeVar("T")

TAIL_PER_WORKER = 32  # sources per worker ordered by estimated cost (about 5 ms each to estimate)


def order_by_cost(items: Sequence[T], size: Callable[[T], int], path: Callable[[T], str | None], runner) -> list[T]:
    """`items` largest file first, then the last TAIL_PER_WORKER x workers of them by estimated cost
    (a source whose header says nothing is costed by its size at the others' median cost per byte).
    Estimating is best effort: a worker that dies on a hostile header leaves the size order."""
    ordered = sorted(items, key=lambda x: -size(x))
    workers = max(1, int(getattr(runner, "workers", 1) or 1))
    if workers < 2 or len(ordered) < 2:
        return ordered  # one worker: the order does not change when the run ends
    cut = max(0, len(ordered) - TAIL_PER_WORKER * workers)
    tail = ordered[cut:]
    paths = [path(x) for x in tail]
    chunks = [paths[i::workers] for i in range(workers)]
    try:
        parts = runner.map(header_costs, [c for c in chunks if c])
    except Exception:  # noqa: BLE001 - estimating must never stop a run
        return ordered
    costs: list[float | None] = [None] * len(tail)
    for i, part in enumerate(parts):
        costs[i::workers] = part
    ratios = [c / size(x) for c, x in zip(costs, tail) if c and size(x) > 0]
    per_byte = median(ratios) if ratios else 1.0
    est = [c if c else size(x) * per_byte for c, x in zip(costs, tail)]
    return ordered[:cut] + [x for _, x in sorted(zip(est, tail), key=lambda r: -r[0])]
