"""A pipeline: the ordered stages of a run plus the dataset-level steps that run at the barrier.

Per-source stages run in any executor; dataset steps (`DatasetStep`) run once in the driver after every
source is committed, before shards are written — cross-dataset work (dedup) goes there because it needs
every clip scored first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from curate.stage import Clip, SourceTask, Stage

if TYPE_CHECKING:
    from curate.config import CurateConfig


class DatasetStep(Protocol):
    """A barrier step: sees every committed source (in input order) and may reject clips."""

    name: str

    def __call__(self, tasks: list[SourceTask]) -> None: ...


@dataclass
class Pipeline:
    stages: list[Stage]
    dataset_steps: list[DatasetStep] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


# Extra builders registered by optional stage families (model stages, dedup): each takes the config and
# returns (stages to insert before transcode, dataset steps). Explicit list, no import-time side effects.
StageFactory = Callable[["CurateConfig"], tuple[list[Stage], list[DatasetStep]]]


def model_stage_factories() -> list[StageFactory]:
    """Where model stages plug in (captioning models, aesthetics, embeddings, dedup)."""
    factories: list[StageFactory] = []
    try:  # helper-owned optional package; absent in a minimal build
        from curate.models.stages import build_model_stages  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        factories.append(build_model_stages)
    return factories


def build_pipeline(config: CurateConfig, out_dir: str) -> Pipeline:
    """The standard pipeline: probe, split, filters, captions, [model stages], transcode, commit."""
    from curate.stages.caption import TimedTextCaptionStage
    from curate.stages.commit import CommitStage
    from curate.stages.filters import FilterStage
    from curate.stages.probe import ProbeStage
    from curate.stages.split import SplitStage
    from curate.stages.transcode import TranscodeStage

    stages: list[Stage] = [
        ProbeStage(config.probe),
        SplitStage(config.split),
        FilterStage(config.filters),
        TimedTextCaptionStage(config.captions),
    ]
    steps: list[DatasetStep] = []
    for factory in model_stage_factories():
        more_stages, more_steps = factory(config)
        stages.extend(more_stages)
        steps.extend(more_steps)
    stages.append(TranscodeStage(config.transcode))
    stages.append(CommitStage(out_dir))
    return Pipeline(stages=stages, dataset_steps=steps)


def kept(tasks: list[SourceTask]) -> list[Clip]:
    return [c for t in tasks for c in t.clips if c.active]
