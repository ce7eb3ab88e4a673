"""Frozen video autoencoders behind one interface: video in [-1, 1] <-> normalised latents.

kind="wan":   diffusers AutoencoderKLWan (local folder or hub id), latents normalised per channel with
              the model's latents_mean/latents_std ((z - mean) / std, as WanPipeline inverts), optional
              tiled encode/decode for large frames.
kind="pixel": no network; space-to-depth by `space_to_depth` so a tiny DiT can run in pixel space on a
              CPU (channels 3*s*s, H/s, W/s; frames unchanged). With `downsample` d > 1 the frames are
              area-averaged by d first and decoding upsamples them bilinearly: a fixed, lossy "latent"
              that keeps the picture's layout and colours (what a tiny model trained in minutes can
              learn) and drops detail finer than d pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch

from diffusion.dtypes import parse_dtype

_CONFIG_FILE = "video_vae.json"


@dataclass
class VAEConfig:
    kind: str = "pixel"  # "pixel" | "wan"
    path: str | None = None  # wan: local folder or hub id (a pipeline folder is read from its vae/)
    subfolder: str | None = None
    space_to_depth: int = 2  # pixel only
    downsample: int = 1  # pixel only: area-average by this factor before space-to-depth (see above)
    tiling: bool = False
    tile_sample_min_height: int = 256
    tile_sample_min_width: int = 256
    tile_sample_stride_height: int = 192
    tile_sample_stride_width: int = 192
    sample_posterior: bool = False  # False: use the posterior mode (deterministic latents)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in ("pixel", "wan"):
            raise ValueError(f"vae kind must be 'pixel' or 'wan', got {self.kind!r}")
        if self.kind == "wan" and not self.path:
            raise ValueError("vae kind 'wan' needs a path (local folder or hub id)")
        if self.space_to_depth < 1:
            raise ValueError(f"space_to_depth must be >= 1, got {self.space_to_depth}")
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")



class VideoVAE:
    """encode(video (B, 3, T, H, W) in [-1, 1]) -> latents; decode(latents) -> video in [-1, 1]."""

    def __init__(self, config: VAEConfig, model=None):
        self.config = config
        self.model = model
        if config.kind == "wan":
            if model is None:
                model = self.model = self._load_wan(config)
            model.requires_grad_(False).eval()
            if config.tiling:
                model.enable_tiling(config.tile_sample_min_height, config.tile_sample_min_width,
                                    config.tile_sample_stride_height, config.tile_sample_stride_width)
            cfg = model.config
            self.latent_channels = int(cfg.z_dim)
            self.temporal_factor = int(getattr(cfg, "scale_factor_temporal", None) or 4)
            self.spatial_factor = int(getattr(cfg, "scale_factor_spatial", None) or 8)
            self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
            self._std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        else:
            s = config.space_to_depth
            self.latent_channels = 3 * s * s
            self.temporal_factor = 1
            self.spatial_factor = s * config.downsample

    @staticmethod
    def _load_wan(config: VAEConfig):
        from diffusers import AutoencoderKLWan

        sub = config.subfolder
        if sub is None and os.path.isdir(os.path.join(config.path, "vae")):
            sub = "vae"
        kwargs = {"torch_dtype": parse_dtype(config.dtype)}
        if sub:
            kwargs["subfolder"] = sub
        return AutoencoderKLWan.from_pretrained(config.path, **kwargs)

    def to(self, device) -> "VideoVAE":
        """Move the autoencoder (if any) to `device`; latents and videos follow their inputs."""
        if self.model is not None:
            self.model.to(device)
        return self

    @classmethod
    def from_config(cls, config: VAEConfig) -> "VideoVAE":
        return cls(config)

    # -- shapes ----------------------------------------------------------------------------------
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F, H, W) of the latents of a video of this size."""
        if self.config.kind == "wan":
            if (frames - 1) % self.temporal_factor:
                raise ValueError(f"the Wan VAE needs 1 + {self.temporal_factor}k frames, got {frames}")
            f = (frames - 1) // self.temporal_factor + 1
        else:
            f = frames
        if height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(f"height and width must be multiples of {self.spatial_factor}, got {height}x{width}")
        return self.latent_channels, f, height // self.spatial_factor, width // self.spatial_factor

    def video_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_factor + 1 if self.config.kind == "wan" else latent_frames

    # -- encode / decode -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video (B, 3, T, H, W), got {tuple(video.shape)}")
        self.latent_shape(video.shape[2], video.shape[3], video.shape[4])  # validates the size
        if self.config.kind == "pixel":
            return _space_to_depth(_area_down(video, self.config.downsample), self.config.space_to_depth)
        m = self.model
        dist = m.encode(video.to(m.dtype)).latent_dist
        z = dist.sample(generator) if self.config.sample_posterior else dist.mode()
        return ((z.float() - self._mean.to(z.device)) / self._std.to(z.device)).to(video.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, F, H, W), got {tuple(latents.shape)}")
        if self.config.kind == "pixel":
            pixels = _depth_to_space(latents, self.config.space_to_depth)
            return _bilinear_up(pixels, self.config.downsample).clamp(-1, 1)
        m = self.model
        z = latents.float() * self._std.to(latents.device) + self._mean.to(latents.device)
        video = m.decode(z.to(m.dtype), return_dict=False)[0]
        return video.float().clamp(-1, 1)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Write the config (and, for wan, the weights) so `VideoVAE.load(directory)` rebuilds it."""
        os.makedirs(directory, exist_ok=True)
        cfg = asdict(self.config)
        if self.config.kind == "wan":
            self.model.save_pretrained(os.path.join(directory, "wan_vae"), safe_serialization=True)
            cfg.update(path="wan_vae", subfolder=None)
        tmp = os.path.join(directory, _CONFIG_FILE + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(cfg, fh, indent=2)
        os.replace(tmp, os.path.join(directory, _CONFIG_FILE))

    @classmethod
    def load(cls, directory: str) -> "VideoVAE":
        path = os.path.join(directory, _CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory}: no {_CONFIG_FILE}")
        with open(path) as fh:
            cfg = json.load(fh)
        if cfg.get("kind") == "wan" and cfg.get("path") and not os.path.isabs(cfg["path"]):
            cfg["path"] = os.path.join(directory, cfg["path"])
        return cls(VAEConfig(**cfg))


def _area_down(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, C, T, H, W) frames averaged over d x d pixel squares."""
    if d == 1:
        return x
    b, c, t, h, w = x.shape
    return x.reshape(b, c, t, h // d, d, w // d, d).mean(dim=(4, 6))


def _bilinear_up(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, C, T, H, W) frames enlarged d times, bilinearly (pixel centres kept: align_corners=False)."""
    if d == 1:
        return x
    import torch.nn.functional as F

    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    up = F.interpolate(frames, scale_factor=d, mode="bilinear", align_corners=False)
    return up.reshape(b, t, c, h * d, w * d).permute(0, 2, 1, 3, 4)


def _space_to_depth(x: torch.Tensor, s: int) -> torch.Tensor:
    if s == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // s, s, w // s, s)
    return x.permute(0, 1, 4, 6, 2, 3, 5).reshape(b, c * s * s, t, h // s, w // s)


def _depth_to_space(x: torch.Tensor, s: int) -> torch.Tensor:
    if s == 1:
        return x
    b, cs, t, h, w = x.shape
    c = cs // (s * s)
    x = x.reshape(b, c, s, s, t, h, w)
    return x.permute(0, 1, 4, 5, 2, 6, 3).reshape(b, c, t, h * s, w * s)


def create_tiny_wan_vae(directory: str, z_dim: int = 4, base_dim: int = 8, seed: int = 0) -> str:
    """Save a tiny random AutoencoderKLWan (spatial x8, temporal x4) to `directory` (tests, benchmarks)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    mean = (torch.randn(z_dim, generator=g) * 0.1).tolist()
    std = (1.0 + torch.rand(z_dim, generator=g)).tolist()
    model = AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             attn_scales=[], temperal_downsample=[False, True, True], latents_mean=mean,
                             latents_std=std)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
