"""Config section `models.vlm` (off by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from curate.typed_config import Range

Positive = Annotated[float, Range(above=0)]


@dataclass
class VLMConfig:
    enabled: bool = False
    backend: Literal["hf", "openai"] = "hf"  # hf: transformers, in the worker; openai: a server (e.g. vLLM)
    model: str = "Qwen/Qwen2-VL-2B-Instruct"  # local folder or hub id (hf); the served model name (openai)
    prompt: str = "Describe this video clip in one or two sentences: the scene, the subjects and the action."
    fps: Positive = 1.0  # frames sampled per second of each window
    max_frames: Annotated[int, Range(1, 256)] = 4  # at most this many frames per window
    window_s: Annotated[float, Range(0)] = 10.0  # clips longer than this get one caption per window; 0 = one window
    max_side: Annotated[int, Range(16, 8192)] = 448  # frames are downscaled to this longest side first
    max_new_tokens: Annotated[int, Range(1, 32768)] = 64
    batch_size: Annotated[int, Range(1, 4096)] = 4  # windows per generate() call
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = True  # replace captions from timed text; false keeps them and captions the rest
    tasks_per_batch: Annotated[int, Range(1, 1024)] = 4
    # openai backend
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable (may be unset)
    concurrency: Annotated[int, Range(1, 1024)] = 8  # requests in flight per worker
    retries: Annotated[int, Range(0, 100)] = 3  # extra tries after a connection error, a timeout, 429 or 5xx
    timeout_s: Positive = 120.0
