"""Memory a model or a generation will need, estimated from the config before anything is allocated,
so an impossible size is one clear line instead of minutes of swapping or the OOM killer."""

from __future__ import annotations

import math
import os

from diffusion.dit.config import DiTConfig

GIB = 1 << 30


def available_bytes() -> int:
    """Memory this process can still take: MemAvailable (Linux), the cgroup limit when lower."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            avail = 1 << 62
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, avail)


def dit_params(cfg: DiTConfig) -> int:
    """Parameters of VideoDiT for `cfg` (the Wan2.1 layout, biases and norms included)."""
    d, f, L = cfg.dim, cfg.ffn_dim, cfg.num_layers
    block = (4 * d * d + 4 * d) * 2 + (2 * d * f + f + d) + 6 * d + 4 * d  # self+cross attn, MLP, mod, norms
    embed = cfg.in_channels * cfg.patch_volume * d + d  # patch embedding
    text = cfg.text_dim * d + d + d * d + d
    time = cfg.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
    head = d * cfg.out_channels * cfg.patch_volume + cfg.out_channels * cfg.patch_volume + 2 * d
    return L * block + embed + text + time + head


def tokens(cfg: DiTConfig, latent_fhw: tuple[int, int, int]) -> int:
    return math.prod(math.ceil(s / p) for s, p in zip(latent_fhw, cfg.patch_size))


def generation_bytes(cfg: DiTConfig, latent_shape: tuple[int, int, int, int], video_thw: tuple[int, int, int],
                     text_len: int, param_bytes: int = 4) -> int:
    """A generous estimate of the peak memory of one generation (weights, a guided batch of activations,
    the latents and the decoded video)."""
    n = tokens(cfg, latent_shape[1:])
    batch = 2  # conditional and unconditional in one call
    width = max(cfg.ffn_dim, 4 * cfg.dim)
    activations = batch * n * width * 4 * 3 + batch * text_len * cfg.dim * 4 * 4
    latents = math.prod(latent_shape) * 4 * 6
    t, h, w = video_thw
    video = 3 * t * h * w * (4 * 2 + 1)
    return dit_params(cfg) * param_bytes + activations + latents + video


def describe(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.0f} MiB"
