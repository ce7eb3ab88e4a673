"""A pipeline: the ordered per-source stages of a run plus the dataset steps that run at the barrier.

The stage list is explicit and its imports direct (a stage that does not import is an error, never a
silent skip): probe, split, filter, caption, [clip_scores], [vlm_caption], [caption_enhance], transcode,
commit; then, at the barrier, [dedup]. Bracketed stages run when their config section is enabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.config import CurateConfig
from curate.stages.caption.stage import TimedTextCaptionStage
from curate.stages.caption_enhance.stage import CaptionEnhanceStage
from curate.stages.clip_scores.stage import ClipScoreStage
from curate.stages.commit.stage import CommitStage
from curate.stages.dedup.step import DedupStep
from curate.stages.filters.stage import FilterStage
from curate.stages.probe.stage import ProbeStage
from curate.stages.split.stage import SplitStage
from curate.stages.transcode.encode import ClipEncoder
from curate.stages.transcode.stage import TranscodeStage
from curate.stages.vlm_caption.stage import CaptionModelStage
from curate.step import DatasetStep, PipelineStep


@dataclass
class Pipeline:
    stages: list[PipelineStep]
    dataset_steps: list[DatasetStep] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def build_pipeline(config: CurateConfig, out_dir: str) -> Pipeline:
    models = config.models
    split = SplitStage(config.split)
    # Between the filters and the transcoder only the CLIP scores stage can still reject a clip (captions
    # never do): without it, the filter stage encodes the clips it keeps while it decodes them.
    rejects_later = models.aesthetic.enabled
    encoder = None if rejects_later else ClipEncoder(config.transcode)
    stages: list[PipelineStep] = [
        ProbeStage(config.probe, analysis_width=split.analysis_width),
        split,
        FilterStage(config.filters, encoder=encoder),
        TimedTextCaptionStage(config.captions),
    ]
    if models.aesthetic.enabled or models.embedding.enabled:
        stages.append(ClipScoreStage(models.clip, models.aesthetic, models.embedding))
    if models.vlm.enabled:
        stages.append(CaptionModelStage(models.vlm))
    if models.caption_enhance.enabled:
        stages.append(CaptionEnhanceStage(models.caption_enhance))
    stages += [TranscodeStage(config.transcode), CommitStage(out_dir)]
    steps: list[DatasetStep] = [DedupStep(models.dedup)] if models.dedup.enabled else []
    return Pipeline(stages=stages, dataset_steps=steps)
