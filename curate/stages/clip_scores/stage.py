"""The CLIP scores stage: CLIP image embeddings of frames sampled per clip -> `aesthetic` (the head, mean or
min over the frames; LowAesthetic rejects below the threshold) and `embedding` (the mean frame embedding,
normalised), from one forward pass.

Batching is per source: a task's clips go through the model together, never mixed with another task's, so
the numbers a clip gets do not depend on how an executor groups tasks (local and Ray give the same rows).
"""

from __future__ import annotations

from typing import ClassVar

from curate.common.device import gpus_for
from curate.common.frames import decode_at, known_facts, sample_times
from curate.errors import CurateError
from curate.filter import ClipFilter
from curate.stages.clip_scores.config import AestheticConfig, ClipModelConfig, EmbeddingConfig
from curate.step import PipelineStep, Resources
from curate.task import Clip, SourceTask


class LowAesthetic(ClipFilter):
    reason: ClassVar[str] = "low_aesthetic"
    score: ClassVar[str | None] = "aesthetic"

    def __init__(self, config: AestheticConfig) -> None:
        self.threshold = config.threshold

    def keep(self, clip: Clip) -> bool:
        return not clip.aesthetic < self.threshold


class ClipScoreStage(PipelineStep):
    name = "clip_scores"

    def __init__(self, clip: ClipModelConfig, aesthetic: AestheticConfig, embedding: EmbeddingConfig):
        self.clip, self.aesthetic, self.embedding = clip, aesthetic, embedding
        self.rule = LowAesthetic(aesthetic)
        self.resources = Resources(cpus=1.0, gpus=gpus_for(clip.device), batch_size=clip.tasks_per_batch)
        self.encoder = None
        self.head = None

    def setup(self) -> None:
        from curate.stages.clip_scores.aesthetic import AestheticHead
        from curate.stages.clip_scores.embedding import ClipEncoder

        c = self.clip
        self.encoder = ClipEncoder(c.model, device=c.device, dtype=c.dtype, batch_size=c.batch_size).load()
        if self.aesthetic.enabled:
            self.head = AestheticHead.load(self.aesthetic.head)
            if self.head.in_dim != self.encoder.dim:
                raise CurateError(f"aesthetic head takes {self.head.in_dim}-d inputs but {c.model} gives "
                                  f"{self.encoder.dim}-d embeddings")

    def process_task(self, task: SourceTask) -> None:
        import torch

        from curate.stages.clip_scores.aesthetic import reduce_scores
        from curate.stages.clip_scores.embedding import clip_embedding

        if self.encoder is None:
            self.setup()
        clips = [c for c in task.clips if c.active]
        if not clips:
            return
        n = self.clip.frames
        times = [t for c in clips for t in sample_times(c.start_s, c.end_s, fps=0, max_frames=n)]
        frames = decode_at(task.local_path or task.source, times,
                           max_side=max(256, 2 * _processor_side(self.encoder)), **known_facts(task))
        feats = self.encoder.frame_embeddings(frames).view(len(clips), n, -1)
        scores = None
        if self.head is not None:
            with torch.inference_mode():
                scores = self.head(feats.reshape(len(clips) * n, -1)).view(len(clips), n)
        for i, clip in enumerate(clips):
            if self.embedding.enabled:
                clip.embedding = [float(v) for v in clip_embedding(feats[i]).tolist()]
            if scores is not None:
                clip.aesthetic = reduce_scores(scores[i], self.aesthetic.reduce)
                self.rule(clip)

    def teardown(self) -> None:
        self.encoder = self.head = None


def _processor_side(encoder) -> int:
    size = getattr(encoder.processor, "crop_size", None) or getattr(encoder.processor, "size", None) or {}
    return int(size.get("height") or size.get("shortest_edge") or 224)
