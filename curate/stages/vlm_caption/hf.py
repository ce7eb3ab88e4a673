"""Captions from a transformers vision-language model (Qwen2-VL / Qwen2.5-VL, or any model that
``AutoModelForImageTextToText`` loads), from a local folder or hub id.

Each caption request is one window of a clip: its sampled frames go in as images of one user turn, with
the configured prompt after them; requests are batched (left padding) through ``generate`` (greedy, so the
same inputs give the same caption). When the checkpoint's own processor cannot be built here (Qwen2-VL's
needs torchvision for its video half, which a CPU-only install may lack) the tokenizer, image processor
and chat template are used directly, expanding each image placeholder to the image's token count as the
model expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from curate.common.device import pick_device, pick_dtype
from curate.errors import CurateError


class _ImageTokenProcessor:
    """Tokenizer + image processor for models that mark images with one repeated placeholder token whose
    count is the image's patch grid over the spatial merge (the Qwen2-VL family)."""

    def __init__(self, tokenizer, image_processor, image_token: str, merge_size: int):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token = image_token
        self.merge_length = merge_size**2

    def apply_chat_template(self, messages, **kwargs):
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, *, text: list[str], images: list[list], return_tensors: str = "pt", padding: bool = True):
        flat = [im for group in images for im in group]
        vision = self.image_processor(images=flat, return_tensors=return_tensors)
        grids = iter(vision["image_grid_thw"].prod(-1).tolist())
        expanded = []
        for prompt in text:
            parts = prompt.split(self.image_token)
            out = parts[0]
            for part in parts[1:]:
                out += self.image_token * (next(grids) // self.merge_length) + part
            expanded.append(out)
        enc = self.tokenizer(expanded, return_tensors=return_tensors, padding=padding)
        return {**enc, **vision}

    def batch_decode(self, ids, **kwargs):
        return self.tokenizer.batch_decode(ids, **kwargs)


class VLMCaptioner:
    def __init__(self, model: str, *, prompt: str, max_new_tokens: int = 64, batch_size: int = 4,
                 device: str = "auto", dtype: str = "auto"):
        self.model_name = model
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = None
        self.processor = None

    def load(self) -> VLMCaptioner:
        from transformers import AutoConfig, AutoModelForImageTextToText

        try:
            config = AutoConfig.from_pretrained(self.model_name)
            model = AutoModelForImageTextToText.from_pretrained(self.model_name, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise CurateError(f"cannot load VLM {self.model_name!r}: {' '.join(str(exc).split())[:200]}") from None
        self.processor = self._load_processor(config)
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # generation continues from the right end of every row
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self.model = model.to(self.device).eval()
        return self

    def _load_processor(self, config):
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        try:
            return AutoProcessor.from_pretrained(self.model_name)
        except Exception as first:  # noqa: BLE001 - fall back below, or report this error
            image_token_id = getattr(config, "image_token_id", None)
            vision = getattr(config, "vision_config", None)
            merge = getattr(vision, "spatial_merge_size", None)
            if image_token_id is None or merge is None:
                raise CurateError(f"cannot load the processor of {self.model_name!r}: {' '.join(str(first).split())[:200]}") from None
            tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            image_processor = AutoImageProcessor.from_pretrained(self.model_name)
            if tokenizer.chat_template is None:
                raise CurateError(f"{self.model_name!r} has no chat template") from None
            token = tokenizer.convert_ids_to_tokens(image_token_id)
            return _ImageTokenProcessor(tokenizer, image_processor, token, merge)

    def _messages(self, n_images: int) -> list[dict]:
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": self.prompt}]
        return [{"role": "user", "content": content}]

    @torch.inference_mode()
    def caption(self, frame_sets: Sequence[Sequence[np.ndarray]]) -> list[str]:
        """One caption per window (a list of RGB uint8 frames), in order, ``batch_size`` windows per call."""
        if self.model is None:
            self.load()
        from PIL import Image

        out: list[str] = []
        for i in range(0, len(frame_sets), self.batch_size):
            chunk = frame_sets[i:i + self.batch_size]
            texts = [self.processor.apply_chat_template(self._messages(len(f)), add_generation_prompt=True,
                                                        tokenize=False) for f in chunk]
            images = [[Image.fromarray(np.asarray(fr)) for fr in f] for f in chunk]
            inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
            inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                      for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = ids[:, inputs["input_ids"].shape[1]:]
            out.extend(t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True))
        return out
