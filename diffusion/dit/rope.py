"""3D rotary position embedding (Wan2.1): the head dim is split into frame, height and width parts.

Each part rotates consecutive channel pairs (2i, 2i+1) by position * theta^(-2i/d). The angles are
computed in float64 for the whole latent grid, so a context-parallel rank can take its slice of the
sequence exactly like the tokens.
"""

from __future__ import annotations

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels given to (frames, height, width); the same split as Wan2.1."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(n: int, dim: int, theta: float, device) -> torch.Tensor:
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))
    return torch.outer(torch.arange(n, dtype=torch.float64, device=device), inv)  # (n, dim/2)


def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
                max_seq_len: int | None = None, device=None) -> torch.Tensor:
    """Rotation angles (S, head_dim/2) in float64 for a (frames, height, width) token grid, row-major."""
    f, h, w = grid
    if max_seq_len is not None and max(grid) > max_seq_len:
        raise ValueError(f"token grid {grid} exceeds rope_max_seq_len={max_seq_len}")
    dt, dh, dw = axis_dims(head_dim)
    af = _axis_angles(f, dt, theta, device)[:, None, None, :].expand(f, h, w, -1)
    ah = _axis_angles(h, dh, theta, device)[None, :, None, :].expand(f, h, w, -1)
    aw = _axis_angles(w, dw, theta, device)[None, None, :, :].expand(f, h, w, -1)
    return torch.cat([af, ah, aw], dim=-1).reshape(f * h * w, head_dim // 2)


def rope_cos_sin(angles: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # cos/sin in float64 then cast, as the reference does, so float32 results agree to rounding
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return angles.cos().to(work), angles.sin().to(work)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, S, H, D); cos/sin (S, D/2). Rotates pairs (2i, 2i+1)."""
    pairs = x.to(cos.dtype).unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)
    return out.to(x.dtype)
