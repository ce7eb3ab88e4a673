"""Which decoded frames a read returns: nearest timestamp to a regular time grid (variable frame rate
is normal), fed one frame at a time so a backend can decide while it streams."""

from __future__ import annotations

import math


class GridSelector:
    """Picks, for each grid time start + k * step (k < limit, time < end), the frame whose timestamp
    is nearest (ties go to the earlier frame). Only frames inside [start, end) are candidates.

    Feed frames in display order with `feed(index, time)`; it returns the frame indices to emit now,
    each either the previous candidate or this one, in grid order. `finish(stream_end)` returns what
    is left once no frame follows; `stream_end` is the end of the last frame (used when `end` is None).
    """

    def __init__(self, start: float, end: float | None, step: float, limit: int | None = None):
        if not step > 0 or not math.isfinite(step):
            raise ValueError(f"frame step must be positive, got {step}")
        self.start, self.end, self.step, self.limit = start, end, step, limit
        self.k = 0
        self.prev: tuple[int, float] | None = None

    def _grid(self) -> float | None:
        if self.limit is not None and self.k >= self.limit:
            return None
        g = self.start + self.k * self.step
        if self.end is not None and g >= self.end - 1e-9:
            return None
        return g

    @property
    def done(self) -> bool:
        return self._grid() is None

    def feed(self, index: int, time: float) -> list[int]:
        out: list[int] = []
        g = self._grid()
        while g is not None and g <= time:
            if self.prev is not None and g - self.prev[1] <= time - g:
                out.append(self.prev[0])
            else:
                out.append(index)
            self.k += 1
            g = self._grid()
        self.prev = (index, time)
        return out

    def finish(self, stream_end: float) -> list[int]:
        out: list[int] = []
        if self.prev is None:
            return out
        end = stream_end if self.end is None else min(self.end, stream_end)
        g = self._grid()
        while g is not None and g < end - 1e-9:
            out.append(self.prev[0])
            self.k += 1
            g = self._grid()
        return out


def in_range(time: float, start: float | None, end: float | None) -> bool:
    return (start is None or time >= start - 1e-9) and (end is None or time < end - 1e-9)
