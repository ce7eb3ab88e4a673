"""Config section `models.caption_enhance` (off by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from curate.typed_config import Range

Positive = Annotated[float, Range(above=0)]

DEFAULT_INSTRUCTION = (
    "Rewrite the video caption below into one detailed paragraph that a text-to-video model can follow as a "
    "prompt: the subjects and their appearance, the action, the setting, the lighting and the camera motion. "
    "Keep every fact of the caption and invent nothing that contradicts it. Answer with the paragraph only.")


@dataclass
class CaptionEnhanceConfig:
    enabled: bool = False
    backend: Literal["hf", "openai"] = "hf"  # hf: a transformers causal LM in the worker; openai: a server
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"  # local folder or hub id (hf); the served model name (openai)
    instruction: str = DEFAULT_INSTRUCTION  # the system turn (or, without a chat template, the preamble)
    max_new_tokens: Annotated[int, Range(1, 32768)] = 256
    batch_size: Annotated[int, Range(1, 4096)] = 8  # captions per generate() call (hf)
    device: str = "auto"
    dtype: str = "auto"
    tasks_per_batch: Annotated[int, Range(1, 1024)] = 4
    # openai backend
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable (may be unset)
    concurrency: Annotated[int, Range(1, 1024)] = 8  # requests in flight per worker
    retries: Annotated[int, Range(0, 100)] = 3  # extra tries after a connection error, a timeout, 429 or 5xx
    timeout_s: Positive = 120.0
