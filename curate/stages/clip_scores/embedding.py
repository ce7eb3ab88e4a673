"""CLIP image embeddings of frames and clips (transformers ``CLIPModel``, local folder or hub id).

A clip's embedding is the mean of its frames' L2-normalised image embeddings, renormalised: cosine
similarity between two clips is then a plain dot product (what dedup uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from curate.common.device import pick_device, pick_dtype
from curate.errors import CurateError


class ClipEncoder:
    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 64):
        self.model_name = model
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = None
        self.processor = None

    def load(self) -> ClipEncoder:
        from transformers import AutoImageProcessor, CLIPModel

        try:
            self.processor = AutoImageProcessor.from_pretrained(self.model_name)
            model = CLIPModel.from_pretrained(self.model_name, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise CurateError(f"cannot load CLIP model {self.model_name!r}: {' '.join(str(exc).split())[:200]}") from None
        self.model = model.to(self.device).eval()
        return self

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.inference_mode()
    def frame_embeddings(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """``(N, D)`` float32 L2-normalised image embeddings of RGB uint8 frames, in batches."""
        if self.model is None:
            self.load()
        outs = []
        for i in range(0, len(frames), self.batch_size):
            chunk = list(frames[i:i + self.batch_size])
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
            feats = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
            if not isinstance(feats, torch.Tensor):  # some versions return a model output
                feats = feats.pooler_output
            outs.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        if not outs:
            return torch.empty(0, self.dim)
        return torch.cat(outs)


def clip_embedding(frame_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of normalised frame embeddings, renormalised (``(D,)``)."""
    return torch.nn.functional.normalize(frame_embeddings.mean(dim=0), dim=-1)
