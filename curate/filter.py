"""The clip filter base class (after datatrove's BaseFilter): a filter is a small class with its reject
reason and its keep rule; the base class records the verdict.

Calling a filter on a clip applies it: a clip its rule does not keep is rejected with the filter's reason,
and the first reason a clip gets stays (a clip is checked by the rules in their documented order, so the
reason names the first rule it breaks). A rule sees only the clip: its facts (duration, size) or a score
a stage measured (`score` names it, so the stage knows what to measure before the rule runs).
"""

from __future__ import annotations

from typing import ClassVar

from curate.task import Clip
from dataload.clip_record import DUPLICATE_PREFIX, REJECT_REASONS


class ClipFilter:
    reason: ClassVar[str]  # one of the clip record's documented REJECT_REASONS
    score: ClassVar[str | None] = None  # the measured score the rule reads; None: the clip's own facts

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        reason = getattr(cls, "reason", None)
        if reason is not None and reason not in REJECT_REASONS and not reason.startswith(DUPLICATE_PREFIX):
            raise TypeError(f"{cls.__name__}.reason {reason!r} is not one of the clip record's REJECT_REASONS")

    def keep(self, clip: Clip) -> bool:
        raise NotImplementedError(f"{type(self).__name__}.keep")

    def __call__(self, clip: Clip) -> bool:
        """Apply the rule: True when the clip is still a candidate afterwards."""
        if not clip.active:
            return False
        if self.keep(clip):
            return True
        clip.reject(self.reason)
        return False
