"""Flow-matching (rectified flow) training objective, the same convention as diffusers' flow schedulers.

    sigma in (0, 1],  timestep = sigma * num_train_timesteps  (what VideoDiT takes)
    x_t    = (1 - sigma) * x0 + sigma * noise
    target = noise - x0            (velocity d x_t / d sigma; Euler steps x += (sigma_next - sigma) * v)

Timesteps: uniform or logit-normal sigma, then the static shift sigma' = s*sigma / (1 + (s-1)*sigma)
(s > 1 spends more steps at high noise, as FlowMatchEulerDiscreteScheduler/UniPC(flow_shift) do).

Loss weight: "uniform" is the plain squared velocity error. "sigma_sq" multiplies each sample's error by
sigma^2; for a model that predicts the clean sample (DiTConfig.prediction="sample", velocity
(x_t - x0_hat) / sigma) the velocity error is (x0 - x0_hat) / sigma, so this is the squared error of its
clean sample: every noise level counts alike, where the uniform weight lets the nearly clean levels
(weight 1/sigma^2) drown the noisy ones that decide the picture's layout and motion.

Distributed convention (data x context parallel): draw timesteps, noise and caption dropout from a
generator seeded identically on every rank of a context-parallel group (seed it by data-parallel rank
and step, never by CP rank), so the CP ranks see the same sample. `loss` returns
    sum(per-element loss over this rank's samples) / normalizer
with `normalizer` the element count over the whole global batch (`global_normalizer`), counted once per
CP group. Each CP rank computes that loss on the gathered output; summing (not averaging) parameter
gradients over all dp x cp ranks then gives exactly the single-process gradient of the global masked
mean. A trainer whose reduction averages over N ranks multiplies the loss by N first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class FlowMatchingConfig:
    timestep_sampling: str = "logit_normal"  # "uniform" | "logit_normal"
    shift: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    caption_dropout: float = 0.1
    num_train_timesteps: int = 1000
    loss_weight: str = "uniform"  # "uniform" | "sigma_sq" (see the module docstring)

    def __post_init__(self) -> None:
        if self.timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'logit_normal', got {self.timestep_sampling!r}")
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if not self.logit_std > 0:
            raise ValueError(f"logit_std must be positive, got {self.logit_std}")
        if self.loss_weight not in ("uniform", "sigma_sq"):
            raise ValueError(f"loss_weight must be 'uniform' or 'sigma_sq', got {self.loss_weight!r}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


class FlowMatching:
    def __init__(self, config: FlowMatchingConfig | None = None):
        self.config = config or FlowMatchingConfig()

    def sample_sigmas(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) float64 sigmas in (0, 1), drawn on the CPU so every device gets the same numbers."""
        c = self.config
        if c.timestep_sampling == "uniform":
            u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        else:
            n = torch.randn(batch_size, generator=generator, dtype=torch.float64)
            u = torch.sigmoid(c.logit_mean + c.logit_std * n)
        # keep sigma strictly inside (0, 1): sigma = 0 would train on clean inputs only
        u = u.clamp(1e-5, 1 - 1e-5)
        return shift_sigmas(u, c.shift)

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None,
                         device=None) -> torch.Tensor:
        """(B,) float32 model timesteps in (0, num_train_timesteps)."""
        t = self.sample_sigmas(batch_size, generator) * self.config.num_train_timesteps
        return t.to(device=device, dtype=torch.float32)

    def sample_noise(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gaussian noise shaped like `like`, drawn on the CPU (identical on every rank with the same seed)."""
        n = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        return n.to(device=like.device, dtype=like.dtype)

    def sigmas(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timesteps / self.config.num_train_timesteps

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor,
              timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, velocity target) for clean x0 (B, ...) at model timesteps (B,)."""
        s = self.sigmas(timesteps).to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return (1 - s) * x0 + s * noise, noise - x0

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """(B,) weights of each sample's squared error at these model timesteps (None: all 1)."""
        if self.config.loss_weight == "uniform":
            return None
        return self.sigmas(timesteps.double()) ** 2

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
             normalizer: torch.Tensor | float | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Masked mean squared error. mask broadcasts to pred ((B,) sample weights or a (B,1,F,H,W)
        validity map); without `normalizer` it is the local masked mean, with it sum / normalizer.
        weights (B,): `loss_weights` of the samples' timesteps (they scale errors, not the count)."""
        err = (pred.float() - target.float()) ** 2 if pred.dtype != torch.float64 else (pred - target) ** 2
        if weights is not None:
            err = err * weights.to(err.device, err.dtype).view(-1, *([1] * (err.ndim - 1)))
        if mask is None:
            total = err.sum()
            count = err.numel()
        else:
            m = mask.to(err.dtype)
            m = m.view(*m.shape, *([1] * (err.ndim - m.ndim)))
            m = m.expand_as(err)
            total = (err * m).sum()
            count = m.sum()
        denom = count if normalizer is None else normalizer
        if not torch.is_tensor(denom):
            denom = torch.tensor(float(denom), dtype=err.dtype, device=err.device)
        return total / denom.clamp_min(1e-12)

    @staticmethod
    def element_count(pred: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """How many loss elements this rank's batch holds (the mask broadcast to pred)."""
        if mask is None:
            return torch.tensor(float(pred.numel()), dtype=torch.float64)
        m = mask.to(torch.float64)
        m = m.view(*m.shape, *([1] * (pred.ndim - m.ndim)))
        return m.expand(pred.shape).sum()

    @classmethod
    def global_normalizer(cls, pred: torch.Tensor, mask: torch.Tensor | None = None,
                          dp_group=None) -> torch.Tensor:
        """Element count of the global batch: summed over the data-parallel group only (each CP group
        holds one copy of its samples)."""
        count = cls.element_count(pred, mask).to(pred.device)
        if dp_group is not None and dist.is_initialized() and dist.get_world_size(dp_group) > 1:
            dist.all_reduce(count, group=dp_group)
        return count.to(torch.float64 if pred.dtype == torch.float64 else torch.float32)

    # -- packed batches: lists of per-sample tensors of different shapes ------------------------------
    def packed_loss(self, preds: list[torch.Tensor], targets: list[torch.Tensor], weights: torch.Tensor | None,
                    normalizer: torch.Tensor | float, loss_weights: torch.Tensor | None = None) -> torch.Tensor:
        """sum over samples of weight_i * (summed squared error of sample i) / normalizer. A packed batch
        holds no padding tokens (the model returns real tokens only), so every element counts;
        weights (N,) zero the loader's repeated samples; loss_weights (N,) are `loss_weights`."""
        total = None
        for i, (p, t) in enumerate(zip(preds, targets)):
            err = (p.float() - t.float()) ** 2 if p.dtype != torch.float64 else (p - t) ** 2
            part = err.sum() if weights is None else err.sum() * weights[i].to(err.dtype)
            if loss_weights is not None:
                part = part * loss_weights[i].to(part.device, part.dtype)
            total = part if total is None else total + part
        if total is None:
            raise ValueError("a packed batch needs at least one sample")
        denom = normalizer if torch.is_tensor(normalizer) else torch.tensor(float(normalizer))
        return total / denom.to(device=total.device, dtype=total.dtype).clamp_min(1e-12)

    @staticmethod
    def packed_element_count(latents: list[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
        """Loss elements of a packed batch: the real samples' latent elements."""
        count = torch.zeros((), dtype=torch.float64)
        for i, x in enumerate(latents):
            if weights is None or bool(weights[i]):
                count += x.numel()
        return count

    def apply_caption_dropout(self, text: torch.Tensor, text_mask: torch.Tensor, empty_text: torch.Tensor,
                              empty_mask: torch.Tensor, generator: torch.Generator | None = None,
                              rate: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replace each sample's text by the empty-prompt embedding with probability `rate`
        (config.caption_dropout). empty_text (L, D) or (1, L, D). Returns (text, mask, dropped (B,))."""
        p = self.config.caption_dropout if rate is None else rate
        b = text.shape[0]
        drop = torch.rand(b, generator=generator, dtype=torch.float64) < p
        if not bool(drop.any()):
            return text, text_mask, drop
        et = empty_text.reshape(1, *empty_text.shape[-2:]).to(device=text.device, dtype=text.dtype)
        em = empty_mask.reshape(1, empty_mask.shape[-1]).to(device=text_mask.device, dtype=text_mask.dtype)
        if et.shape[1:] != text.shape[1:]:
            raise ValueError(f"empty-text embedding {tuple(et.shape[1:])} does not match text {tuple(text.shape[1:])}")
        d = drop.to(text.device)
        text = torch.where(d[:, None, None], et.expand_as(text), text)
        text_mask = torch.where(d[:, None], em.expand_as(text_mask), text_mask)
        return text, text_mask, drop
