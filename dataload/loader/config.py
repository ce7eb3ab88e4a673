"""Loader configuration: typed dataclass plus named presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

REMAINDER_RULES = ("drop", "pad")
START_MODES = ("random", "center")
DTYPES = ("uint8", "float32")


@dataclass(frozen=True)
class Bucket:
    """One batch shape: frames, height, width (pixels for curated clips)."""

    num_frames: int
    height: int
    width: int

    @property
    def aspect(self) -> float:
        return self.width / self.height


@dataclass
class LoaderConfig:
    """How clips become batches.

    buckets: (h, w) pairs (frame count = `num_frames`) or (t, h, w) triples. A clip goes to the bucket with
      the most frames it can fill at `fps`, then the nearest aspect ratio (ties: first listed).
    fps: target frame rate; frames are picked by nearest timestamp. None takes consecutive native frames.
    start: "random" (seeded per sample and epoch) or "center" placement of the window inside the clip.
    dtype: "uint8" (0..255) or "float32" (scaled to [-1, 1], what diffusion models take).
    remainder: what happens to what does not fill a batch. "drop": incomplete bucket batches at the end of
      a rank's stream are dropped, and every rank stops at the smallest rank's batch count. "pad":
      incomplete batches are filled with repeats of their own samples (`pad_mask` False for repeats) and
      ranks with fewer batches repeat batches marked as padding, so every sample is seen once.
    pack_tokens: when set, a batch is one packed sequence of at most this many tokens (clip tokens after
      patchify by `patch` = (t, h, w) on the loaded tensor), filled first-fit-decreasing over
      `pack_window` samples; `cu_seqlens` and `loss_mask` describe it.
    max_member_bytes / max_small_member_bytes: caps on a shard member's declared size (video or latents /
      .json and .txt), checked on the tar header before anything is read; a sample over a cap is skipped.
    max_frame_pixels: the most pixels a decoded video frame may have (the stream's declared size is
      checked before decoding, FFmpeg refuses bigger frames, and so is the scaled output); a clip over it
      is skipped. The default admits 8K UHD.
    """

    batch_size: int = 4
    num_frames: int = 16
    fps: float | None = None
    buckets: Sequence[tuple[int, ...]] = ((64, 64),)
    seed: int = 0
    shuffle_shards: bool = True
    shuffle_buffer: int = 64
    num_workers: int = 0
    start: str = "random"
    dtype: str = "uint8"
    remainder: str = "drop"
    pack_tokens: int | None = None
    patch: tuple[int, int, int] = (1, 2, 2)
    pack_window: int = 64
    prefetch_factor: int = 2
    decode_threads: int = 1
    max_member_bytes: int = 1 << 30
    max_small_member_bytes: int = 16 << 20
    max_frame_pixels: int = 1 << 25
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if self.fps is not None and not self.fps > 0:
            raise ValueError("fps must be > 0 or None")
        if self.start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, got {self.start!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.remainder not in REMAINDER_RULES:
            raise ValueError(f"remainder must be one of {REMAINDER_RULES}, got {self.remainder!r}")
        if self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        if self.pack_tokens is not None and self.pack_tokens < 1:
            raise ValueError("pack_tokens must be >= 1 or None")
        for name in ("max_member_bytes", "max_small_member_bytes", "max_frame_pixels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ValueError("patch must be three positive ints (t, h, w)")
        self.bucket_list()  # validates

    def bucket_list(self) -> list[Bucket]:
        out = []
        for b in self.buckets:
            if len(b) == 2:
                out.append(Bucket(self.num_frames, int(b[0]), int(b[1])))
            elif len(b) == 3:
                out.append(Bucket(int(b[0]), int(b[1]), int(b[2])))
            else:
                raise ValueError(f"a bucket is (h, w) or (t, h, w), got {b!r}")
            if min(out[-1].num_frames, out[-1].height, out[-1].width) < 1:
                raise ValueError(f"bucket sizes must be positive, got {b!r}")
        if not out:
            raise ValueError("at least one bucket is needed")
        return out

    def tokens(self, shape_thw: tuple[int, int, int]) -> int:
        """Tokens of a (T, H, W) tensor after patchify (ceil: the model pads partial patches)."""
        return math.prod(math.ceil(s / p) for s, p in zip(shape_thw, self.patch))

    def fingerprint(self) -> dict[str, Any]:
        """What must not change across a resume (worker count, prefetch and threads may)."""
        return {"batch_size": self.batch_size, "num_frames": self.num_frames, "fps": self.fps,
                "buckets": [list(b) for b in self.buckets], "seed": self.seed,
                "shuffle_shards": self.shuffle_shards, "shuffle_buffer": self.shuffle_buffer,
                "remainder": self.remainder, "pack_tokens": self.pack_tokens, "patch": list(self.patch),
                "pack_window": self.pack_window}


def tiny_preset(**overrides: Any) -> LoaderConfig:
    """CPU smoke runs: small clips, two aspect buckets."""
    kw: dict[str, Any] = dict(batch_size=2, num_frames=8, fps=8.0, buckets=[(32, 32), (32, 48)],
                              shuffle_buffer=16)
    kw.update(overrides)
    return LoaderConfig(**kw)


def wan_480p_preset(**overrides: Any) -> LoaderConfig:
    """Wan2.1-style 480p training: 81 frames at 16 fps, landscape/portrait/square buckets."""
    kw: dict[str, Any] = dict(batch_size=1, num_frames=81, fps=16.0, dtype="float32",
                              buckets=[(480, 832), (832, 480), (624, 624)], shuffle_buffer=256,
                              patch=(4, 16, 16), num_workers=4)
    kw.update(overrides)
    return LoaderConfig(**kw)
