"""The stages that wrap the models (CLIP aesthetics + embeddings, VLM / HTTP captions) and the dedup barrier
step, and `build_model_stages`, the factory `curate.pipeline` calls.

Batching is per source: a task's clips (or caption windows) go through the model together, never mixed with
another task's, so the numbers a clip gets do not depend on how an executor groups tasks (local and Ray
give the same parquet rows bit for bit).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curate.dedup import DedupItem, find_duplicates, phash, relative_positions
from curate.models.config import DedupConfig, ModelsConfig, validate_models
from curate.models.frames import clip_windows, decode_at, sample_times
from curate.stage import Resources, SourceTask, Stage

if TYPE_CHECKING:
    from curate.pipeline import DatasetStep


def _gpus(device: str) -> float:
    """One GPU per actor when the stage will run on CUDA (device auto/cuda and a GPU present)."""
    if device == "cpu":
        return 0.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def _source_path(task: SourceTask) -> str:
    return task.local_path or task.source


def _known(task: SourceTask) -> dict:
    """What the probe stage already learnt (frame times, display size): saves the reader a scan."""
    size = (task.width, task.height) if task.width and task.height else None
    return {"frame_times": task.frame_times or None, "size": size}


class ClipScoreStage(Stage):
    """CLIP image embeddings of frames sampled per clip -> ``aesthetic`` (head, mean/min over frames, threshold
    -> ``low_aesthetic``) and ``embedding`` (mean frame embedding, normalised), from one forward pass."""

    name = "clip_scores"

    def __init__(self, cfg: ModelsConfig):
        self.cfg = cfg
        self.resources = Resources(cpus=1.0, gpus=_gpus(cfg.clip.device), batch_size=cfg.clip.tasks_per_batch)
        self.encoder = None
        self.head = None

    def setup(self) -> None:
        from curate.models.aesthetic import AestheticHead
        from curate.models.embedding import ClipEncoder

        c = self.cfg.clip
        self.encoder = ClipEncoder(c.model, device=c.device, dtype=c.dtype, batch_size=c.batch_size).load()
        if self.cfg.aesthetic.enabled:
            self.head = AestheticHead.load(self.cfg.aesthetic.head)
            if self.head.in_dim != self.encoder.dim:
                from curate.errors import CurateError

                raise CurateError(f"aesthetic head takes {self.head.in_dim}-d inputs but {c.model} gives "
                                  f"{self.encoder.dim}-d embeddings")

    def process_task(self, task: SourceTask) -> None:
        import torch

        if self.encoder is None:
            self.setup()
        clips = [c for c in task.clips if c.active]
        if not clips:
            return
        n = self.cfg.clip.frames
        times = [t for c in clips for t in sample_times(c.start_s, c.end_s, fps=0, max_frames=n)]
        frames = decode_at(_source_path(task), times, max_side=max(256, 2 * _processor_side(self.encoder)),
                           **_known(task))
        feats = self.encoder.frame_embeddings(frames).view(len(clips), n, -1)
        scores = None
        if self.head is not None:
            with torch.inference_mode():
                scores = self.head(feats.reshape(len(clips) * n, -1)).view(len(clips), n)
        from curate.models.aesthetic import reduce_scores
        from curate.models.embedding import clip_embedding

        for i, clip in enumerate(clips):
            if self.cfg.embedding.enabled:
                clip.embedding = [float(v) for v in clip_embedding(feats[i]).tolist()]
            if scores is not None:
                clip.aesthetic = reduce_scores(scores[i], self.cfg.aesthetic.reduce)
                if clip.aesthetic < self.cfg.aesthetic.threshold:
                    clip.reject("low_aesthetic")

    def teardown(self) -> None:
        self.encoder = self.head = None


def _processor_side(encoder) -> int:
    size = getattr(encoder.processor, "crop_size", None) or getattr(encoder.processor, "size", None) or {}
    return int(size.get("height") or size.get("shortest_edge") or 224)


class CaptionModelStage(Stage):
    """Captions from a VLM (``backend: hf``) or an OpenAI-compatible server (``backend: openai``): frames
    sampled per window of each clip; ``caption`` joins the windows' texts, ``caption_windows`` keeps them."""

    name = "vlm_caption"

    def __init__(self, cfg: ModelsConfig):
        self.cfg = cfg.vlm
        gpus = _gpus(self.cfg.device) if self.cfg.backend == "hf" else 0.0
        self.resources = Resources(cpus=1.0, gpus=gpus, batch_size=self.cfg.tasks_per_batch)
        self.captioner = None

    def setup(self) -> None:
        v = self.cfg
        if v.backend == "openai":
            from curate.models.http_caption import HTTPCaptioner

            self.captioner = HTTPCaptioner(v.base_url, v.model, prompt=v.prompt, max_new_tokens=v.max_new_tokens,
                                           concurrency=v.concurrency, retries=v.retries, timeout_s=v.timeout_s,
                                           api_key_env=v.api_key_env)
        else:
            from curate.models.vlm_caption import VLMCaptioner

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
        frames = decode_at(_source_path(task), [t for ts in per_window for t in ts], max_side=v.max_side,
                           **_known(task))
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


class DedupStep:
    """The barrier step: every committed source's surviving clips, hashed from their transcoded mp4s (the
    bytes that will be shipped) and compared with their embeddings; duplicates are rejected."""

    name = "dedup"

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.seconds = 0.0

    def _hashes(self, task: SourceTask, clip) -> np.ndarray | None:
        media = Path(task.work_dir or ".") / (clip.media or "")
        if not clip.media or not media.is_file():
            return None
        length = max(0.0, clip.end_s - clip.start_s)
        times = [p * length for p in relative_positions(self.cfg.hash_frames)]
        try:
            frames = decode_at(str(media), times, max_side=128)
        except Exception:  # noqa: BLE001 - an unreadable clip just goes without a hash
            return None
        return np.array([phash(f) for f in frames], dtype=np.uint64)

    def __call__(self, tasks: list[SourceTask]) -> None:
        t0 = time.perf_counter()
        pairs = [(t, c) for t in tasks for c in t.clips if c.active]
        items = []
        for task, clip in pairs:
            emb = np.asarray(clip.embedding, dtype=np.float64) if clip.embedding is not None else None
            items.append(DedupItem(clip.clip_id, int(clip.width) * int(clip.height), self._hashes(task, clip), emb))
        dups = find_duplicates(items, self.cfg)
        for _, clip in pairs:
            if clip.clip_id in dups:
                clip.reject(f"duplicate_of:{dups[clip.clip_id]}")
        self.seconds = time.perf_counter() - t0


def build_model_stages(config) -> tuple[list[Stage], list[DatasetStep]]:
    """Stages (inserted before transcode) and barrier steps for the enabled ``models.*`` sections."""
    cfg: ModelsConfig | None = getattr(config, "models", None)
    if cfg is None:
        return [], []
    validate_models(cfg)
    stages: list[Stage] = []
    if cfg.aesthetic.enabled or cfg.embedding.enabled:
        stages.append(ClipScoreStage(cfg))
    if cfg.vlm.enabled:
        stages.append(CaptionModelStage(cfg))
    steps: list[DatasetStep] = [DedupStep(cfg.dedup)] if cfg.dedup.enabled else []
    return stages, steps

