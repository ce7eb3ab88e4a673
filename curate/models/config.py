"""Config sections of the model stages and dedup (``models.*`` in the run's YAML / ``--set``).

Everything is off by default: the default run is the CPU-only one that needs no weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.errors import CurateError


@dataclass
class ClipModelConfig:
    """The CLIP image model shared by the aesthetic score and the clip embedding (one forward pass)."""

    model: str = "openai/clip-vit-large-patch14"  # local folder or hub id
    frames: int = 4  # frames sampled evenly per clip
    batch_size: int = 64  # frames per forward pass
    device: str = "auto"  # auto: cuda when present, else cpu
    dtype: str = "auto"  # auto: bf16 on cuda, float32 on cpu
    tasks_per_batch: int = 4  # sources the executor hands one worker at once (GPU actors: more)


@dataclass
class AestheticConfig:
    enabled: bool = False
    head: str = ""  # safetensors file: layers.{i}.weight/bias (a linear or MLP head over CLIP embeddings)
    reduce: str = "mean"  # mean | min over the sampled frames
    threshold: float = 4.5  # below it: reject_reason low_aesthetic


@dataclass
class EmbeddingConfig:
    enabled: bool = False  # mean of the L2-normalised CLIP frame embeddings, renormalised -> `embedding`


@dataclass
class VLMConfig:
    enabled: bool = False
    backend: str = "hf"  # hf (transformers, in the worker) | openai (an OpenAI-compatible server, e.g. vLLM)
    model: str = "Qwen/Qwen2-VL-2B-Instruct"  # local folder or hub id (hf); the served model name (openai)
    prompt: str = "Describe this video clip in one or two sentences: the scene, the subjects and the action."
    fps: float = 1.0  # frames sampled per second of each window
    max_frames: int = 4  # at most this many frames per window
    window_s: float = 10.0  # clips longer than this get one caption per window; 0 = one window
    max_side: int = 448  # frames are downscaled to this longest side before the processor
    max_new_tokens: int = 64
    batch_size: int = 4  # windows per generate() call
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = True  # replace captions from timed text; false keeps them and captions the rest
    tasks_per_batch: int = 4
    # openai backend
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable (may be unset)
    concurrency: int = 8  # requests in flight per worker
    retries: int = 3  # extra tries after a connection error, a timeout, 429 or 5xx
    timeout_s: float = 120.0


@dataclass
class DedupConfig:
    enabled: bool = False
    hash_frames: int = 3  # frames per clip hashed (at 1/4, 1/2, 3/4 of the clip for 3)
    hash_max_distance: int = 8  # mean Hamming distance (of 64 bits per frame) that still counts as a re-upload
    semantic: bool = True  # also compare `embedding`s (needs models.embedding.enabled)
    cosine_threshold: float = 0.95  # embeddings at least this similar are near-duplicates
    clusters: int = 0  # k-means clusters; 0 = about sqrt(clips / 2)
    kmeans_iters: int = 25
    seed: int = 0


@dataclass
class ModelsConfig:
    clip: ClipModelConfig = field(default_factory=ClipModelConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)


def validate_models(cfg: ModelsConfig) -> None:
    if cfg.aesthetic.enabled and not cfg.aesthetic.head:
        raise CurateError("models.aesthetic.enabled needs models.aesthetic.head (a safetensors file)")
    if cfg.aesthetic.reduce not in ("mean", "min"):
        raise CurateError(f"models.aesthetic.reduce must be mean or min, got {cfg.aesthetic.reduce!r}")
    if cfg.vlm.backend not in ("hf", "openai"):
        raise CurateError(f"models.vlm.backend must be hf or openai, got {cfg.vlm.backend!r}")
    if cfg.vlm.max_frames < 1 or cfg.clip.frames < 1 or cfg.dedup.hash_frames < 1:
        raise CurateError("models.vlm.max_frames, models.clip.frames and models.dedup.hash_frames must be >= 1")
    if cfg.vlm.batch_size < 1 or cfg.clip.batch_size < 1 or cfg.vlm.concurrency < 1:
        raise CurateError("models batch sizes and models.vlm.concurrency must be >= 1")
    if not -1.0 <= cfg.dedup.cosine_threshold <= 1.0:
        raise CurateError("models.dedup.cosine_threshold must be within [-1, 1]")
    if cfg.dedup.enabled and cfg.dedup.semantic and not cfg.embedding.enabled:
        raise CurateError("models.dedup.semantic needs models.embedding.enabled (or set models.dedup.semantic=false)")
