"""VideoDiT: the Wan2.1 text-to-video transformer, written here, weight-compatible with diffusers.

Flow: Conv3d patch embedding -> tokens (B, S, D); sinusoidal timestep -> MLP -> 6-way AdaLN modulation
per block; text -> 2-layer GELU(tanh) projection; blocks of [modulated LN -> self-attention (RMS-normed
Q/K, 3D RoPE) -> gated residual; LN -> cross-attention to text; modulated LN -> GELU MLP -> gated
residual]; modulated LN head -> linear -> unpatchify. Norms and modulation run in float32 (as Wan does),
so bf16 autocast keeps them stable.

A packed batch (a list of per-sample latents of different sizes, see diffusion/dit/packing.py) runs as
one sequence: each sample is patch-embedded and unpatchified on its own, takes its own RoPE positions,
timestep modulation and text, and self-attention never crosses samples.

With a context-parallel group set, the token sequence (and its RoPE angles) is sharded over the group
after the patch embedding (padded at the end when it does not divide) and gathered before
unpatchifying; text tokens stay replicated. Parameter gradients are then partial per CP rank: their
sum over the group is the single-rank gradient (the DP x CP reduction sums them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffusion.dit.attention import CrossAttention, SelfAttention
from diffusion.dit.config import DiTConfig
from diffusion.dit.packing import RankPack, check_packed_inputs
from diffusion.dit.rope import rope_angles, rope_cos_sin
from parallel.sequence import gather_sequence, shard_sequence


def _layer_norm32(x: torch.Tensor, eps: float, weight=None, bias=None) -> torch.Tensor:
    w = None if weight is None else weight.float() if x.dtype != torch.float64 else weight
    b = None if bias is None else bias.float() if x.dtype != torch.float64 else bias
    xf = x if x.dtype == torch.float64 else x.float()
    return F.layer_norm(xf, (x.shape[-1],), w, b, eps)


def timestep_sinusoid(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) -> (B, dim): [cos, sin] of t * 10000^(-i/half) (Wan's flip_sin_to_cos layout)."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(work)[:, None] * freqs.to(work)[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class MLP2(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, act: nn.Module):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = act
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    def __init__(self, c: DiTConfig):
        super().__init__()
        self.eps = c.eps
        self.self_attn = SelfAttention(c.dim, c.num_heads, c.eps)
        self.cross_norm = nn.LayerNorm(c.dim, eps=c.eps) if c.cross_attn_norm else None
        self.cross_attn = CrossAttention(c.dim, c.num_heads, c.eps)
        self.mlp = MLP2(c.dim, c.ffn_dim, c.dim, nn.GELU(approximate="tanh"))
        self.modulation = nn.Parameter(torch.randn(1, 6, c.dim) / c.dim**0.5)

    def forward(self, x, mod, text, cos, sin, cp=None, seq_len=None, text_mask=None, pack: RankPack | None = None):
        # mod (B, 6, D) in float32: shift/scale/gate for attention, then for the MLP
        m = self.modulation.to(mod.dtype) + mod
        if pack is None:
            shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = m.chunk(6, dim=1)
        else:  # packed: each token takes its own sample's modulation, (1, S_local, D) each
            shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = m[pack.token_sample].transpose(0, 1).chunk(6, dim=0)
        h = (_layer_norm32(x, self.eps) * (1 + scale_a) + shift_a).type_as(x)
        x = (x.to(m.dtype) + self.self_attn(h, cos, sin, cp, seq_len, pack) * gate_a).type_as(x)
        h = x if self.cross_norm is None else _layer_norm32(
            x, self.eps, self.cross_norm.weight, self.cross_norm.bias).type_as(x)
        x = x + self.cross_attn(h, text, text_mask, pack)
        h = (_layer_norm32(x, self.eps) * (1 + scale_f) + shift_f).type_as(x)
        return (x.to(m.dtype) + self.mlp(h).to(m.dtype) * gate_f).type_as(x)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.proj = nn.Linear(dim, out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """temb (B, D), or (1, S, D) per token for a packed sequence."""
        if temb.ndim == 3:
            shift, scale = (self.modulation.to(temb.dtype)[:, :, None, :] + temb[:, None]).unbind(1)
            return self.proj((_layer_norm32(x, self.eps) * (1 + scale) + shift).type_as(x))
        shift, scale = (self.modulation.to(temb.dtype) + temb[:, None, :]).chunk(2, dim=1)
        return self.proj((_layer_norm32(x, self.eps) * (1 + scale) + shift).type_as(x))


class VideoDiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        c = self.config = config
        self.patch_embed = nn.Conv3d(c.in_channels, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.time_embed = MLP2(c.freq_dim, c.dim, c.dim, nn.SiLU())
        self.time_modulation = nn.Linear(c.dim, 6 * c.dim)  # applied to SiLU(time embedding)
        self.text_embed = MLP2(c.text_dim, c.dim, c.dim, nn.GELU(approximate="tanh"))
        self.text_pool = nn.Linear(c.text_dim, c.dim) if c.pooled_text else None
        # absolute positions: one table per axis (frames, rows, columns), summed per token
        self.pos_embed = nn.Parameter(torch.zeros(3, c.rope_max_seq_len, c.dim)) if c.abs_pos_embed else None
        self.blocks = nn.ModuleList(DiTBlock(c) for _ in range(c.num_layers))
        self.head = Head(c.dim, c.out_channels * c.patch_volume, c.eps)
        # start by predicting x0 = 0 (mid grey): a random head's output would be divided by sigma
        # (diffusion.dit.weights reads these prefixes when it initialises a sharded model)
        # pooled text starts at zero: the model begins as the one without it
        self.zero_init_prefixes = (("head.proj.",) if c.prediction == "sample" else ()) + (
            ("text_pool.",) if c.pooled_text else ()) + (("pos_embed",) if c.abs_pos_embed else ())
        for name, p in self.named_parameters():
            if name.startswith(self.zero_init_prefixes):
                nn.init.zeros_(p)
        self.activation_checkpointing = c.activation_checkpointing
        self._cp = None

    # -- parallelism and memory ------------------------------------------------------------------
    def set_context_parallel(self, cp) -> None:
        """Shard the token sequence over `cp.group` inside forward (None: one rank)."""
        self._cp = cp

    def enable_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward instead of keeping its activations."""
        self.activation_checkpointing = enabled

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor | list[torch.Tensor], timestep: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """x (B, C, F, H, W) latents, timestep (B,) in [0, 1000), text (B, L, text_dim) -> velocity like x.

        A list x of N latents (C, F_i, H_i, W_i) is a packed batch (timestep (N,), text (N, L, text_dim)):
        one sequence, attention within each sample; returns the list of N velocities."""
        if isinstance(x, (list, tuple)):
            return self._forward_packed(list(x), timestep, text, text_mask)
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_channels:
            raise ValueError(f"expected x of shape (B, {c.in_channels}, F, H, W), got {tuple(x.shape)}")
        b, _, f, h, w = x.shape
        pt, ph, pw = c.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent size (F={f}, H={h}, W={w}) is not divisible by patch_size {c.patch_size}")
        grid = (f // pt, h // ph, w // pw)
        seq_len = math.prod(grid)

        # inputs take the parameters' dtype (bf16 under FSDP2's mixed precision, which does not cast them)
        param_dtype = self.patch_embed.weight.dtype
        tokens = self.patch_embed(x.to(param_dtype)).flatten(2).transpose(1, 2).contiguous()  # (B, S, D)
        if self.pos_embed is not None:
            tokens = tokens + self._positions(grid).to(tokens.dtype)
        cos, sin = rope_cos_sin(rope_angles(grid, c.head_dim, c.rope_theta, c.rope_max_seq_len, x.device),
                                tokens.dtype)

        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        mod, temb32, ctx, ctx_mask = self._condition(timestep, text, text_mask, tokens.dtype)

        cp = self._cp
        if cp is not None:
            tokens = shard_sequence(tokens, 1, cp.group)
            cos = shard_sequence(cos, 0, cp.group)
            sin = shard_sequence(sin, 0, cp.group)

        tokens = self._run_blocks(tokens, mod, ctx, cos, sin, cp, seq_len, ctx_mask)

        out = self.head(tokens, temb32)  # (B, S_local, pt*ph*pw*C_out)
        if cp is not None:
            # every CP rank computes the loss on the whole gathered output (counted once per CP group),
            # so backward hands each rank its own slice of the gradient ("split"); summing parameter
            # gradients over the group then gives the single-rank gradient
            out = gather_sequence(out, 1, cp.group, seq_len, grad="split")
        out = out.reshape(b, *grid, pt, ph, pw, c.out_channels)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c.out_channels, f, h, w)
        if c.prediction == "sample":
            # x0-prediction, handed on as the velocity: v = (x_t - x0) / sigma, sigma = t / 1000
            sigma = (timestep.to(out.dtype) / 1000.0).clamp_min(c.sample_min_sigma).view(b, 1, 1, 1, 1)
            out = (x.to(out.dtype) - out) / sigma
        return out

    def _positions(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(S, D) absolute position embeddings of a (frames, rows, columns) token grid, in token order."""
        f, h, w = grid
        if max(grid) > self.config.rope_max_seq_len:
            raise ValueError(f"token grid {grid} is longer than rope_max_seq_len {self.config.rope_max_seq_len}")
        p = self.pos_embed
        return (p[0, :f, None, None] + p[1, None, :h, None] + p[2, None, None, :w]).reshape(f * h * w, -1)

    def _condition(self, timestep, text, text_mask, token_dtype):
        """Per-sample conditions: block modulation (B, 6, D), head input (B, D), projected text, its mask."""
        c = self.config
        param_dtype = self.time_embed.fc1.weight.dtype
        temb = self.time_embed(timestep_sinusoid(timestep, c.freq_dim, param_dtype).to(param_dtype))
        temb = temb.to(token_dtype)
        if self.text_pool is not None:
            keep = (torch.ones(text.shape[:2], device=text.device) if text_mask is None else text_mask)
            keep = keep.to(param_dtype)[..., None]
            pooled = (text.to(param_dtype) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
            temb = temb + self.text_pool(pooled).type_as(temb)
        mod = self.time_modulation(F.silu(temb)).unflatten(1, (6, c.dim))
        mod = mod if mod.dtype == torch.float64 else mod.float()
        temb32 = temb if temb.dtype == torch.float64 else temb.float()

        if text_mask is not None:
            # Wan's convention: padded text positions are zero vectors (they still pass the projection)
            text = text * text_mask[..., None].to(text.dtype)
        ctx = self.text_embed(text.to(param_dtype))
        ctx_mask = text_mask.bool() if (text_mask is not None and c.text_attention_mask) else None
        return mod, temb32, ctx, ctx_mask

    def _run_blocks(self, tokens, mod, ctx, cos, sin, cp, seq_len, ctx_mask, pack=None):
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, mod, ctx, cos, sin, cp, seq_len, ctx_mask, pack,
                                    use_reentrant=False)
            else:
                tokens = block(tokens, mod, ctx, cos, sin, cp, seq_len, ctx_mask, pack)
        return tokens

    def _forward_packed(self, xs: list[torch.Tensor], timestep: torch.Tensor, text: torch.Tensor,
                        text_mask: torch.Tensor | None) -> list[torch.Tensor]:
        c = self.config
        layout = check_packed_inputs(xs, timestep, text, c.in_channels, c.patch_size)
        param_dtype = self.patch_embed.weight.dtype
        # each sample is embedded on its own grid, then the token rows are concatenated: (1, S, D)
        tokens = torch.cat([self.patch_embed(x[None].to(param_dtype)).flatten(2).transpose(1, 2)
                            for x in xs], dim=1).contiguous()
        if self.pos_embed is not None:
            tokens = tokens + torch.cat([self._positions(g) for g in layout.grids]).to(tokens.dtype)
        angles = torch.cat([rope_angles(g, c.head_dim, c.rope_theta, c.rope_max_seq_len, tokens.device)
                            for g in layout.grids])
        cos, sin = rope_cos_sin(angles, tokens.dtype)
        mod, temb32, ctx, ctx_mask = self._condition(timestep, text, text_mask, tokens.dtype)

        cp = self._cp
        world, rank = (1, 0) if cp is None else (cp.size, cp.rank)
        pack = layout.for_rank(world, rank, tokens.device)
        if cp is not None:
            tokens = shard_sequence(tokens, 1, cp.group)
            cos = shard_sequence(cos, 0, cp.group)
            sin = shard_sequence(sin, 0, cp.group)
        tokens = self._run_blocks(tokens, mod, ctx, cos, sin, cp, None, ctx_mask, pack)
        out = self.head(tokens, temb32[pack.token_sample][None])  # (1, S_local, pt*ph*pw*C_out)
        if cp is not None:
            out = gather_sequence(out, 1, cp.group, layout.total, grad="split")  # as in forward
        pt, ph, pw = c.patch_size
        outs = []
        for i, (x, grid, (a, b)) in enumerate(zip(xs, layout.grids, zip(layout.cu_seqlens, layout.cu_seqlens[1:]))):
            _, f, h, w = x.shape
            o = out[0, a:b].reshape(*grid, pt, ph, pw, c.out_channels)
            o = o.permute(6, 0, 3, 1, 4, 2, 5).reshape(c.out_channels, f, h, w)
            if c.prediction == "sample":
                sigma = (timestep[i].to(o.dtype) / 1000.0).clamp_min(c.sample_min_sigma)
                o = (x.to(o.dtype) - o) / sigma
            outs.append(o)
        return outs

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
