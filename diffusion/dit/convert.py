"""Conversion between VideoDiT and diffusers' WanTransformer3DModel (config and state dict).

Every tensor maps one to one (Q, K and V are separate projections in both). Wan2.1 image-to-video
extras (image_dim, added_kv_proj_dim) are refused with a clear error: VideoDiT is the text-to-video model.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch

from diffusion.dit.config import DiTConfig
from diffusion.dit.model import VideoDiT

_UNSUPPORTED = ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len")

# our name -> diffusers name, for tensors that map one to one
_TOP = {
    "patch_embed.weight": "patch_embedding.weight",
    "patch_embed.bias": "patch_embedding.bias",
    "time_embed.fc1.weight": "condition_embedder.time_embedder.linear_1.weight",
    "time_embed.fc1.bias": "condition_embedder.time_embedder.linear_1.bias",
    "time_embed.fc2.weight": "condition_embedder.time_embedder.linear_2.weight",
    "time_embed.fc2.bias": "condition_embedder.time_embedder.linear_2.bias",
    "time_modulation.weight": "condition_embedder.time_proj.weight",
    "time_modulation.bias": "condition_embedder.time_proj.bias",
    "text_embed.fc1.weight": "condition_embedder.text_embedder.linear_1.weight",
    "text_embed.fc1.bias": "condition_embedder.text_embedder.linear_1.bias",
    "text_embed.fc2.weight": "condition_embedder.text_embedder.linear_2.weight",
    "text_embed.fc2.bias": "condition_embedder.text_embedder.linear_2.bias",
    "head.proj.weight": "proj_out.weight",
    "head.proj.bias": "proj_out.bias",
    "head.modulation": "scale_shift_table",
}
_BLOCK = {
    "modulation": "scale_shift_table",
    "self_attn.norm_q.weight": "attn1.norm_q.weight",
    "self_attn.norm_k.weight": "attn1.norm_k.weight",
    "self_attn.out.weight": "attn1.to_out.0.weight",
    "self_attn.out.bias": "attn1.to_out.0.bias",
    "self_attn.q.weight": "attn1.to_q.weight",
    "self_attn.q.bias": "attn1.to_q.bias",
    "self_attn.k.weight": "attn1.to_k.weight",
    "self_attn.k.bias": "attn1.to_k.bias",
    "self_attn.v.weight": "attn1.to_v.weight",
    "self_attn.v.bias": "attn1.to_v.bias",
    "cross_attn.q.weight": "attn2.to_q.weight",
    "cross_attn.q.bias": "attn2.to_q.bias",
    "cross_attn.k.weight": "attn2.to_k.weight",
    "cross_attn.k.bias": "attn2.to_k.bias",
    "cross_attn.v.weight": "attn2.to_v.weight",
    "cross_attn.v.bias": "attn2.to_v.bias",
    "cross_attn.norm_q.weight": "attn2.norm_q.weight",
    "cross_attn.norm_k.weight": "attn2.norm_k.weight",
    "cross_attn.out.weight": "attn2.to_out.0.weight",
    "cross_attn.out.bias": "attn2.to_out.0.bias",
    "cross_norm.weight": "norm2.weight",
    "cross_norm.bias": "norm2.bias",
    "mlp.fc1.weight": "ffn.net.0.proj.weight",
    "mlp.fc1.bias": "ffn.net.0.proj.bias",
    "mlp.fc2.weight": "ffn.net.2.weight",
    "mlp.fc2.bias": "ffn.net.2.bias",
}


def config_from_diffusers(cfg: Mapping[str, Any]) -> DiTConfig:
    """A diffusers WanTransformer3DModel config (dict or FrozenDict) -> DiTConfig; ValueError when it is
    not one (a wrong type or value anywhere)."""
    try:
        return _config_from_diffusers(dict(cfg))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"not a Wan2.1 transformer config: {' '.join(str(exc).split())}") from None


def _config_from_diffusers(cfg: dict[str, Any]) -> DiTConfig:
    for key in _UNSUPPORTED:
        if cfg.get(key) is not None:
            raise ValueError(f"unsupported Wan variant: {key}={cfg[key]} (only text-to-video Wan2.1 is supported)")
    qk = cfg.get("qk_norm", "rms_norm_across_heads")
    if qk not in ("rms_norm_across_heads", True):
        raise ValueError(f"unsupported qk_norm={qk!r}")
    heads = int(cfg.get("num_attention_heads", 40))
    head_dim = int(cfg.get("attention_head_dim", 128))
    in_ch = int(cfg.get("in_channels", 16))
    return DiTConfig(
        in_channels=in_ch, out_channels=int(cfg.get("out_channels") or in_ch),
        patch_size=tuple(cfg.get("patch_size", (1, 2, 2))), dim=heads * head_dim,
        ffn_dim=int(cfg.get("ffn_dim", 13824)), num_heads=heads, num_layers=int(cfg.get("num_layers", 40)),
        text_dim=int(cfg.get("text_dim", 4096)), freq_dim=int(cfg.get("freq_dim", 256)),
        eps=float(cfg.get("eps", 1e-6)), qk_norm=True, cross_attn_norm=bool(cfg.get("cross_attn_norm", True)),
        rope_max_seq_len=int(cfg.get("rope_max_seq_len", 1024)),
    )


def to_diffusers_config(config: DiTConfig) -> dict[str, Any]:
    """DiTConfig -> keyword arguments of WanTransformer3DModel (and its config.json)."""
    return {
        "patch_size": list(config.patch_size), "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim, "in_channels": config.in_channels,
        "out_channels": config.out_channels, "text_dim": config.text_dim, "freq_dim": config.freq_dim,
        "ffn_dim": config.ffn_dim, "num_layers": config.num_layers, "cross_attn_norm": config.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads", "eps": config.eps, "image_dim": None, "added_kv_proj_dim": None,
        "rope_max_seq_len": config.rope_max_seq_len, "pos_embed_seq_len": None,
    }


def state_dict_from_diffusers(sd: Mapping[str, torch.Tensor], config: DiTConfig) -> dict[str, torch.Tensor]:
    """diffusers tensor names -> ours; every diffusers tensor must be used (no silent leftovers)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in sd:
            raise KeyError(f"diffusers state dict lacks {name!r}")
        used.add(name)
        return sd[name]

    for ours, theirs in _TOP.items():
        out[ours] = take(theirs)
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        for ours, theirs in _BLOCK.items():
            if ours.startswith("cross_norm.") and not config.cross_attn_norm:
                continue
            out[p + ours] = take(p + theirs)
    # norm_added_q is a known leftover in some exported Wan checkpoints (diffusers ignores it too)
    extra = [k for k in sd if k not in used and "norm_added_q" not in k]
    if extra:
        raise KeyError(f"diffusers state dict has {len(extra)} tensors VideoDiT does not use, e.g. {extra[:3]}")
    return out


def to_diffusers_state_dict(model_or_sd: VideoDiT | Mapping[str, torch.Tensor],
                            config: DiTConfig | None = None) -> dict[str, torch.Tensor]:
    """Our state dict -> diffusers WanTransformer3DModel names (contiguous tensors, ready for safetensors)."""
    if isinstance(model_or_sd, VideoDiT):
        config = model_or_sd.config
        sd = model_or_sd.state_dict()
    else:
        sd = model_or_sd
        if config is None:
            raise ValueError("to_diffusers_state_dict(state_dict) needs the DiTConfig")
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _TOP.items():
        out[theirs] = sd[ours]
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        for ours, theirs in _BLOCK.items():
            if p + ours in sd:
                out[p + theirs] = sd[p + ours]
    return {k: v.detach().contiguous() for k, v in out.items()}


def read_diffusers_config(path: str) -> dict[str, Any]:
    """A diffusers model folder's config.json (a regular file of sane size, a JSON object)."""
    from dataload.files import read_regular

    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path}: not a diffusers model folder (no config.json)")
    try:
        cfg = json.loads(read_regular(cfg_path, "model config", 1 << 20))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{cfg_path}: not valid JSON") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: not a JSON object")
    return cfg


def _read_diffusers_folder(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and weights; weights only from .safetensors files (never a pickle-based .bin)."""
    from safetensors.torch import load_file

    from dataload.files import regular_file_size

    cfg = read_diffusers_config(path)
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no .safetensors weights")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        regular_file_size(os.path.join(path, f), "weights file")  # never open a FIFO or a device
        sd.update(load_file(os.path.join(path, f)))
    return cfg, sd


def from_diffusers(source, config: DiTConfig | Mapping[str, Any] | None = None,
                   dtype: torch.dtype | None = None) -> VideoDiT:
    """Build a VideoDiT from a WanTransformer3DModel, a diffusers model folder, or (state_dict, config)."""
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(os.path.join(source, "transformer")):
            source = os.path.join(source, "transformer")  # a whole pipeline folder
        cfg, sd = _read_diffusers_folder(str(source))
        config = config or cfg
    elif isinstance(source, torch.nn.Module):
        config = config or source.config
        sd = source.state_dict()
    else:
        sd = source
        if config is None:
            raise ValueError("from_diffusers(state_dict) needs the config")
    if not isinstance(config, DiTConfig):
        config = config_from_diffusers(config)
    model = VideoDiT(config)
    ours = state_dict_from_diffusers(sd, config)
    model.load_state_dict(ours, strict=True)
    if dtype is not None:
        model.to(dtype)
    return model


def save_diffusers(model: VideoDiT, path: str) -> None:
    """Write config.json + diffusion_pytorch_model.safetensors loadable by WanTransformer3DModel.from_pretrained."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    cfg = {"_class_name": "WanTransformer3DModel", **to_diffusers_config(model.config)}
    tmp_cfg = os.path.join(path, "config.json.tmp")
    with open(tmp_cfg, "w") as fh:
        json.dump(cfg, fh, indent=2)
    tmp_w = os.path.join(path, "diffusion_pytorch_model.safetensors.tmp")
    save_file(to_diffusers_state_dict(model), tmp_w)
    os.replace(tmp_w, os.path.join(path, "diffusion_pytorch_model.safetensors"))
    os.replace(tmp_cfg, os.path.join(path, "config.json"))
