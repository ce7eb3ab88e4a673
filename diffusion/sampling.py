"""Sampling loop for flow-matching video models: diffusers' flow Euler and UniPC schedulers,
classifier-free guidance with a negative prompt, seeded noise.

The initial noise is drawn on the CPU from a generator seeded with `config.seed` (or the one given),
so every rank of a context-parallel group starts from the same latents; the model gathers its output
over the group, so every rank also takes the same scheduler steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class SamplerConfig:
    name: str = "unipc"  # "euler" | "unipc"
    steps: int = 50
    guidance: float = 5.0
    shift: float = 3.0
    seed: int = 0
    num_train_timesteps: int = 1000
    # one model call on [cond; uncond] instead of two (same result, fewer launches)
    batch_guidance: bool = True

    def __post_init__(self) -> None:
        if self.name not in ("euler", "unipc"):
            raise ValueError(f"sampler must be 'euler' or 'unipc', got {self.name!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0 (1 = no guidance), got {self.guidance}")
        if not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")


def make_scheduler(config: SamplerConfig):
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if config.name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=config.shift)
    return UniPCMultistepScheduler(num_train_timesteps=config.num_train_timesteps, prediction_type="flow_prediction",
                                   use_flow_sigmas=True, flow_shift=config.shift, solver_order=2)


def initial_noise(shape, generator: torch.Generator | None, seed: int, device=None) -> torch.Tensor:
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    return uncond + guidance * (cond - uncond)


def _pad_text(a: torch.Tensor, am: torch.Tensor | None, length: int):
    if a.shape[1] == length:
        return a, am
    pad = length - a.shape[1]
    a = torch.nn.functional.pad(a, (0, 0, 0, pad))
    if am is None:
        am = torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
        am[:, -pad:] = False
    else:
        am = torch.nn.functional.pad(am, (0, pad), value=False)
    return a, am


@torch.no_grad()
def sample(model_fn: ModelFn, shape, text: torch.Tensor, text_mask: torch.Tensor | None = None,
           neg_text: torch.Tensor | None = None, neg_mask: torch.Tensor | None = None,
           config: SamplerConfig | None = None, generator: torch.Generator | None = None,
           latents: torch.Tensor | None = None, model_dtype: torch.dtype | None = None,
           progress=False) -> torch.Tensor:
    """Denoise from seeded noise of `shape` (B, C, F, H, W); returns float32 latents.

    model_fn(x, t, text, mask) -> velocity. Guidance > 1 needs neg_text (the negative prompt, or the
    empty prompt's embedding); guidance == 1 runs the conditional model only. progress: True for a bar
    of its own (quiet when not a terminal), or a tqdm-like object to update once per step.
    """
    config = config or SamplerConfig()
    device = text.device
    x = initial_noise(shape, generator, config.seed, device) if latents is None else latents.float().clone()
    b = x.shape[0]
    guided = config.guidance > 1.0
    if guided and neg_text is None:
        raise ValueError("guidance > 1 needs a negative (or empty) prompt embedding")
    if guided:
        if neg_text.shape[0] == 1 and b > 1:
            neg_text = neg_text.expand(b, *neg_text.shape[1:])
            neg_mask = None if neg_mask is None else neg_mask.expand(b, -1)
    scheduler = make_scheduler(config)
    scheduler.set_timesteps(config.steps, device=device)
    dtype = model_dtype or x.dtype

    both_text = both_mask = None
    if guided and config.batch_guidance:
        length = max(text.shape[1], neg_text.shape[1])
        ct, cm = _pad_text(text, text_mask, length)
        nt, nm = _pad_text(neg_text, neg_mask, length)
        both_text = torch.cat([ct, nt])
        both_mask = None if cm is None and nm is None else torch.cat([
            cm if cm is not None else torch.ones(ct.shape[:2], dtype=torch.bool, device=device),
            nm if nm is not None else torch.ones(nt.shape[:2], dtype=torch.bool, device=device)])

    steps = scheduler.timesteps
    bar = progress if hasattr(progress, "update") else None  # a caller's bar: one update per step
    if progress is True:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False, disable=None)  # None: quiet when not a terminal
    for t in steps:
        xin = x.to(dtype)
        tt = t.expand(b).to(device)
        if guided and config.batch_guidance:
            v = model_fn(torch.cat([xin, xin]), torch.cat([tt, tt]), both_text, both_mask).float()
            v = cfg_combine(v[:b], v[b:], config.guidance)
        else:
            v = model_fn(xin, tt, text, text_mask).float()
            if guided:
                v = cfg_combine(v, model_fn(xin, tt, neg_text, neg_mask).float(), config.guidance)
        x = scheduler.step(v, t, x, return_dict=False)[0]
        if bar is not None:
            bar.update(1)
    return x
