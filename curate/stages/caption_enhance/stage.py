"""The caption enhancement stage: every active clip with a caption gets it rewritten by a language model.
`caption` becomes the rewrite (the shard's .txt, what training reads), `caption_original` keeps what it
was and `caption_enhance_model` names the model. A model that fails (a server that gives up after its
retries, an empty answer) fails the source like any other stage, with the stage's name and the reason;
the run goes on with the other sources (exit 3)."""

from __future__ import annotations

from curate.common.device import gpus_for
from curate.errors import CurateError
from curate.stages.caption_enhance.config import CaptionEnhanceConfig
from curate.step import PipelineStep, Resources
from curate.task import SourceTask


class CaptionEnhanceStage(PipelineStep):
    name = "caption_enhance"

    def __init__(self, cfg: CaptionEnhanceConfig):
        self.cfg = cfg
        gpus = gpus_for(cfg.device) if cfg.backend == "hf" else 0.0
        self.resources = Resources(cpus=1.0, gpus=gpus, batch_size=cfg.tasks_per_batch)
        self.rewriter = None

    def setup(self) -> None:
        c = self.cfg
        if c.backend == "openai":
            from curate.stages.caption_enhance.http import HTTPRewriter

            self.rewriter = HTTPRewriter(c.base_url, c.model, instruction=c.instruction,
                                         max_new_tokens=c.max_new_tokens, concurrency=c.concurrency,
                                         retries=c.retries, timeout_s=c.timeout_s, api_key_env=c.api_key_env)
        else:
            from curate.stages.caption_enhance.hf import LMRewriter

            self.rewriter = LMRewriter(c.model, instruction=c.instruction, max_new_tokens=c.max_new_tokens,
                                       batch_size=c.batch_size, device=c.device, dtype=c.dtype)
        self.rewriter.load()

    def process_task(self, task: SourceTask) -> None:
        if self.rewriter is None:
            self.setup()
        clips = [c for c in task.clips if c.active and c.caption]
        if not clips:
            return
        texts = self.rewriter.rewrite([c.caption for c in clips])
        empty = [c.clip_id for c, t in zip(clips, texts) if not t]
        if empty:
            raise CurateError(f"{self.cfg.model} gave an empty answer for {len(empty)} caption(s), "
                              f"e.g. clip {empty[0]}")
        for clip, text in zip(clips, texts):
            clip.caption_original = clip.caption
            clip.caption = text
            clip.caption_enhance_model = self.cfg.model

    def teardown(self) -> None:
        self.rewriter = None
