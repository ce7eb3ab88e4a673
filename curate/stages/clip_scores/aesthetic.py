"""Aesthetic score: an MLP (or linear) head over CLIP image embeddings, loaded from a safetensors file.

The head file holds ``layers.{i}.weight`` / ``layers.{i}.bias`` for consecutive linear layers (indices may
skip, as in the LAION aesthetic predictor, whose dropout layers have no weights); the optional metadata key
``activation`` (none | relu | gelu, default none, as LAION's head) sits between layers. A bare
``weight``/``bias`` pair is a linear head. Inputs are L2-normalised embeddings.
"""

from __future__ import annotations

import re

import torch
from safetensors import safe_open

from curate.errors import CurateError

_ACTIVATIONS = {"none": torch.nn.Identity, "relu": torch.nn.ReLU, "gelu": torch.nn.GELU}


class AestheticHead(torch.nn.Module):
    def __init__(self, linears: list[torch.nn.Linear], activation: str = "none"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise CurateError(f"aesthetic head activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        layers: list[torch.nn.Module] = []
        for i, lin in enumerate(linears):
            layers.append(lin)
            if i < len(linears) - 1:
                layers.append(_ACTIVATIONS[activation]())
        self.net = torch.nn.Sequential(*layers)

    @property
    def in_dim(self) -> int:
        return self.net[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @classmethod
    def load(cls, path: str) -> AestheticHead:
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (OSError, FileNotFoundError) as exc:
            raise CurateError(f"cannot read aesthetic head {path}: {exc}") from None
        except Exception as exc:  # safetensors raises its own error type on a bad header
            raise CurateError(f"aesthetic head {path} is not a safetensors file: {exc}") from None
        if "weight" in tensors:
            pairs = [(tensors["weight"], tensors.get("bias"))]
        else:
            idx = sorted({int(m.group(1)) for k in tensors if (m := re.search(r"(\d+)\.weight$", k))})
            prefix = {int(m.group(1)): k[: -len(".weight")] for k in tensors if (m := re.search(r"(\d+)\.weight$", k))}
            pairs = [(tensors[f"{prefix[i]}.weight"], tensors.get(f"{prefix[i]}.bias")) for i in idx]
        if not pairs:
            raise CurateError(f"aesthetic head {path} holds no layers (expected layers.N.weight)")
        linears = []
        for n, (w, b) in enumerate(pairs):
            if w.ndim != 2 or (n and w.shape[1] != pairs[n - 1][0].shape[0]):
                raise CurateError(f"aesthetic head {path}: layer {n} has shape {tuple(w.shape)} that does not chain")
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with torch.no_grad():
                lin.weight.copy_(w.float())
                if b is not None:
                    lin.bias.copy_(b.float())
            linears.append(lin)
        if pairs[-1][0].shape[0] != 1:
            raise CurateError(f"aesthetic head {path} must end in one output, ends in {pairs[-1][0].shape[0]}")
        return cls(linears, meta.get("activation", "none")).eval().requires_grad_(False)


def reduce_scores(scores: torch.Tensor, how: str) -> float:
    """One score per clip from its frames' scores: ``mean`` or ``min`` (a clip is as good as its worst frame)."""
    if how == "mean":
        return float(scores.mean())
    if how == "min":
        return float(scores.min())
    raise CurateError(f"aesthetic reduce must be mean or min, got {how!r}")
