"""The VLM caption stage: frames sampled per window of each clip; `caption` joins the windows' texts,
`caption_windows` keeps them. Batching is per source, as in the CLIP scores stage (executor-independent)."""

from __future__ import annotations

from curate.common.device import gpus_for
from curate.common.frames import clip_windows, decode_at, known_facts, sample_times
from curate.stages.vlm_caption.config import VLMConfig
from curate.step import PipelineStep, Resources
from curate.task import SourceTask


class CaptionModelStage(PipelineStep):
    name = "vlm_caption"

    def __init__(self, cfg: VLMConfig):
        self.cfg = cfg
        gpus = gpus_for(cfg.device) if cfg.backend == "hf" else 0.0
        self.resources = Resources(cpus=1.0, gpus=gpus, batch_size=cfg.tasks_per_batch)
        self.captioner = None

    def setup(self) -> None:
        v = self.cfg
        if v.backend == "openai":
            from curate.stages.vlm_caption.http import HTTPCaptioner

            self.captioner = HTTPCaptioner(v.base_url, v.model, prompt=v.prompt, max_new_tokens=v.max_new_tokens,
                                           concurrency=v.concurrency, retries=v.retries, timeout_s=v.timeout_s,
                                           api_key_env=v.api_key_env)
        else:
            from curate.stages.vlm_caption.hf import VLMCaptioner

            self.captioner = VLMCaptioner(v.model, prompt=v.prompt, max_new_tokens=v.max_new_tokens,
                                          batch_size=v.batch_size, device=v.device, dtype=v.dtype)
        self.captioner.load()

    def process_task(self, task: SourceTask) -> None:
        if self.captioner is None:
            self.setup()
        v = self.cfg
        clips = [c for c in task.clips if c.active and (v.overwrite or not c.caption)]
        if not clips:
            return
        windows = [(c, w) for c in clips for w in clip_windows(c.start_s, c.end_s, v.window_s)]
        per_window = [sample_times(a, b, fps=v.fps, max_frames=v.max_frames) for _, (a, b) in windows]
        frames = decode_at(task.local_path or task.source, [t for ts in per_window for t in ts], max_side=v.max_side,
                           **known_facts(task))
        sets, k = [], 0
        for ts in per_window:
            sets.append(frames[k:k + len(ts)])
            k += len(ts)
        texts = self.captioner.caption(sets)
        for clip in clips:
            clip.caption_windows = []
        for (clip, (a, b)), text in zip(windows, texts):
            clip.caption_windows.append({"start_s": a, "end_s": b, "text": text})
        for clip in clips:
            clip.caption = " ".join(w["text"] for w in clip.caption_windows if w["text"]) or None
            clip.caption_model = v.model

    def teardown(self) -> None:
        self.captioner = None
