"""The experiment config: every part of a training run in one typed tree, named presets, YAML and overrides.

An `ExperimentConfig` composes the model (DiTConfig), the VAE, the text encoder, the flow-matching
objective, the sampler, the loader and the trainer's own `TrainConfig`. Presets are functions (`tiny`,
`wan_1_3b`, `wan_14b`) selected by name or by a YAML file that was written by `save_config` (or by hand);
`--set a.b=v` overrides any leaf, and an unknown key is refused with the list of known ones.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dataload.files import atomic_write_text, describe_os_error, read_regular_text
from dataload.loader.config import LoaderConfig
from diffusion.dit.config import DiTConfig, tiny_dit, wan_1_3b_dit, wan_14b_dit
from diffusion.objective import FlowMatchingConfig
from diffusion.optim import OptimConfig
from diffusion.sampling import SamplerConfig
from diffusion.text_encoder import TextEncoderConfig
from diffusion.trainer import TrainConfig
from diffusion.vae import VAEConfig
from parallel.config import ParallelConfig


class ConfigError(ValueError):
    """A config name, file, key or value that cannot be used (reported as one line)."""


@dataclass
class ExperimentConfig:
    name: str = "custom"
    model: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: LoaderConfig = field(default_factory=LoaderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


# ---------------------------------------------------------------- generic dataclass <-> plain data

def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-safe data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert plain data to the annotated type, refusing what does not fit."""
    if tp is Any:
        return value
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed here")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} entries, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        try:
            return tp(value)
        except Exception as exc:
            raise ConfigError(f"{where}: {value!r} is not a {tp.__name__}") from exc
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from plain data; unknown keys are refused, missing ones take defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key {key!r} (known at this level: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars or flow lists: 3, 1e-4, true, null, [1, 2, 2], "a b".

    Numbers are read the way people write them (YAML 1.1 reads `1e-4` as a string): an integer when it
    has no point or exponent, else a float; a float that overflows (1e400) is refused later as not finite."""
    stripped = text.strip()
    if _NUMBER.match(stripped):
        is_int = not any(c in stripped for c in ".eE")
        return int(stripped) if is_int else float(stripped)
    try:
        value = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError:
        return text
    return value


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4-style numbers inside lists and files as floats."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)[eE][+-]?\d+$"),
    list("-+0123456789."))


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply `a.b=v` overrides to a dataclass tree (returns a new tree); unknown keys are refused."""
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not a section)"
                raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r} (known: {known})")
            if i == len(parts) - 1:
                node[part] = _parse_value(raw)
            else:
                node = node[part]
    return from_dict(type(cfg), data)


# ---------------------------------------------------------------- presets

def tiny() -> ExperimentConfig:
    """CPU minutes: pixel-space "VAE" (space-to-depth 2), a 2-block width-64 DiT, a tiny random T5 with
    the byte-level ByT5 tokenizer (created into RUN because `text.path` is null), 8-frame 32x32 clips."""
    return ExperimentConfig(
        name="tiny",
        model=tiny_dit(),
        vae=VAEConfig(kind="pixel", space_to_depth=2),
        text=TextEncoderConfig(kind="t5", path=None, max_length=32, dim=64),
        flow=FlowMatchingConfig(timestep_sampling="logit_normal", shift=1.0, caption_dropout=0.1),
        sampler=SamplerConfig(name="euler", steps=20, guidance=3.0, shift=1.0, seed=0),
        data=LoaderConfig(batch_size=2, num_frames=8, fps=8.0, buckets=[(32, 32)], shuffle_buffer=16,
                          dtype="uint8"),
        train=TrainConfig(steps=300, optim=OptimConfig(lr=2e-3, warmup_steps=20, min_lr_ratio=0.1,
                                                       weight_decay=0.0, grad_clip=1.0),
                          ema_decay=0.99, checkpoint_every=100, val_every=50, val_batches=1),
    )


def demo() -> ExperimentConfig:
    """`make demo`: the shapes world (dataload.shapes_world) learnt in a few minutes on 2 CPU ranks.

    64x64 pixels, 16 frames at 8 fps. The pixel "VAE" area-averages by 4 (a 16x16 picture: the layout,
    colours and motion, not the fine edges), then space-to-depth 2 (12 channels on an 8x8 grid); a
    (4, 1, 1) patch makes 256 tokens of 4 frames each. The DiT predicts clean samples
    (model.prediction=sample) and the loss weighs its error in those terms (flow.loss_weight=sigma_sq):
    with the plain velocity loss the nearly clean noise levels dominate and the noisy ones, where the
    sampler places the object and sets its motion, are barely trained. Absolute positions
    (model.abs_pos_embed) let it place the object at all: RoPE alone cannot say where in the frame a token
    is. Timesteps are uniform with shift 3, the sampler uses the same shift and no guidance. The tiny
    random text encoder reads whole words of the world's vocabulary, and the pooled text joins every
    block's modulation, the path through which a model trained from scratch learns global attributes
    first."""
    from dataload.shapes_world import ShapesWorld

    return ExperimentConfig(
        name="demo",
        model=DiTConfig(in_channels=12, out_channels=12, patch_size=(4, 1, 1), dim=128, ffn_dim=512,
                        num_heads=4, num_layers=4, text_dim=64, freq_dim=64, rope_max_seq_len=64,
                        prediction="sample", pooled_text=True, abs_pos_embed=True),
        vae=VAEConfig(kind="pixel", space_to_depth=2, downsample=4),
        text=TextEncoderConfig(kind="t5", path=None, max_length=24, dim=64, vocab=ShapesWorld().vocabulary()),
        flow=FlowMatchingConfig(timestep_sampling="uniform", shift=3.0, caption_dropout=0.1, loss_weight="sigma_sq"),
        sampler=SamplerConfig(name="euler", steps=20, guidance=1.0, shift=3.0, seed=0),
        # 16 clips a step cost less per clip than 8 on 2 CPU ranks; 750 such steps at lr 4e-3 learn the
        # held-out pairs (1500 steps of 8 at 2e-3 took 1.3x as long; 700 of 16 at 3e-3 missed direction)
        data=LoaderConfig(batch_size=16, num_frames=16, fps=8.0, buckets=[(64, 64)], shuffle_buffer=64,
                          dtype="uint8"),
        train=TrainConfig(steps=750, optim=OptimConfig(lr=4e-3, warmup_steps=50, min_lr_ratio=0.1,
                                                       weight_decay=0.0, grad_clip=1.0),
                          ema_decay=0.995, checkpoint_every=250, val_every=125, val_batches=1,
                          sample_every=250, sample_prompts=["a red square moves to the left on a dark gray background"]),
        # ring attention: at 128 tokens a rank, one exchange of keys and values per layer costs less than
        # Ulysses' four all-to-alls (0.33 against 0.40 s a step on 2 CPU ranks); colocated encoders: each
        # rank text-encodes and VAE-encodes half of the batch (the losses are those of replicated encoders)
        parallel=ParallelConfig(cp_mode="ring", encoders="colocated"),
    )


def _wan(model: DiTConfig, name: str, text_path: str, vae_path: str) -> ExperimentConfig:
    return ExperimentConfig(
        name=name,
        model=model,
        vae=VAEConfig(kind="wan", path=vae_path, subfolder="vae", tiling=True),
        text=TextEncoderConfig(kind="umt5", path=text_path, max_length=512, dim=4096,
                               subfolder_model="text_encoder", subfolder_tokenizer="tokenizer",
                               dtype="bfloat16"),
        flow=FlowMatchingConfig(timestep_sampling="logit_normal", shift=3.0, caption_dropout=0.1),
        sampler=SamplerConfig(name="unipc", steps=50, guidance=5.0, shift=3.0),
        data=LoaderConfig(batch_size=1, num_frames=81, fps=16.0, dtype="uint8",
                          buckets=[(480, 832), (832, 480), (624, 624)], shuffle_buffer=256,
                          patch=(4, 16, 16), num_workers=4),
        train=TrainConfig(steps=10000, optim=OptimConfig(lr=1e-5, warmup_steps=500, weight_decay=0.01,
                                                         grad_clip=1.0),
                          ema_decay=0.9999, checkpoint_every=500, activation_checkpointing=True,
                          dtype="float32", autocast_bf16=True),
    )


def wan_1_3b() -> ExperimentConfig:
    """Wan2.1 T2V 1.3B sizes with the real UMT5-XXL and Wan VAE (local path or hub id)."""
    return _wan(wan_1_3b_dit(), "wan-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def wan_14b() -> ExperimentConfig:
    """Wan2.1 T2V 14B sizes."""
    return _wan(wan_14b_dit(), "wan-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.1-T2V-14B-Diffusers")


# ---------------------------------------------------------------- files

PRESETS = {"tiny": "tiny", "demo": "demo", "wan-1.3b": "wan_1_3b", "wan-14b": "wan_14b"}
MAX_CONFIG_BYTES = 4 << 20


def preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown config {name!r}: use one of {', '.join(PRESETS)} or a YAML file")
    return globals()[PRESETS[name]]()


def load_config(name_or_file: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A preset by name or a YAML file (a full tree, or a partial one with `base: PRESET` on top)."""
    if name_or_file in PRESETS:
        cfg = preset(name_or_file)
    else:
        path = Path(name_or_file)
        if not path.exists():
            raise ConfigError(f"config {name_or_file!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        try:
            data = yaml.load(read_regular_text(path, "config file", MAX_CONFIG_BYTES), Loader=_ConfigLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file") from None
        except OSError as exc:
            raise ConfigError(f"config {describe_os_error(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top")
        base = data.pop("base", None)
        if base is not None:
            # a partial file: overrides on top of a preset
            cfg = preset(str(base))
            merged = to_dict(cfg)
            _deep_update(merged, data, "")
            cfg = from_dict(ExperimentConfig, merged)
        else:
            cfg = from_dict(ExperimentConfig, data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    check_experiment(cfg)
    return cfg


def vae_factors(cfg: ExperimentConfig) -> tuple[int, int]:
    """(temporal, spatial) downsampling of the configured VAE, known without loading it."""
    if cfg.vae.kind == "pixel":
        return 1, cfg.vae.space_to_depth
    return 4, 8


def check_video_size(cfg: ExperimentConfig, frames: int, height: int, width: int, what: str = "video") -> None:
    """A (frames, height, width) that the VAE and the DiT's positions accept; ConfigError otherwise."""
    ft, fs = vae_factors(cfg)
    if min(frames, height, width) < 1:
        raise ConfigError(f"{what} size {frames}x{height}x{width} must be positive")
    if height % fs or width % fs:
        raise ConfigError(f"{what} height and width must be multiples of {fs}, got {height}x{width}")
    if ft > 1 and (frames - 1) % ft:
        raise ConfigError(f"{what} frames must be 1 + {ft}k for the Wan VAE, got {frames}")
    latent = ((frames - 1) // ft + 1 if ft > 1 else frames, height // fs, width // fs)
    grid = [-(-s // p) for s, p in zip(latent, cfg.model.patch_size)]
    if max(grid) > cfg.model.rope_max_seq_len:
        raise ConfigError(f"{what} size {frames}x{height}x{width} gives a token grid {grid} beyond the model's "
                          f"rope_max_seq_len {cfg.model.rope_max_seq_len}")


def check_experiment(cfg: ExperimentConfig) -> None:
    """What no single section can check alone: the parts must fit together."""
    m = cfg.model
    if m.in_channels != m.out_channels:
        raise ConfigError(f"model.in_channels {m.in_channels} differs from model.out_channels {m.out_channels}")
    if cfg.vae.kind == "pixel" and m.in_channels != 3 * cfg.vae.space_to_depth ** 2:
        raise ConfigError(f"model.in_channels {m.in_channels} does not match the pixel VAE's "
                          f"{3 * cfg.vae.space_to_depth ** 2} channels (3 x space_to_depth^2)")
    if cfg.text.dim is not None and cfg.text.dim != m.text_dim:
        raise ConfigError(f"text.dim {cfg.text.dim} differs from model.text_dim {m.text_dim}")
    for b in cfg.data.bucket_list():
        check_video_size(cfg, b.num_frames, b.height, b.width, "data bucket")
    try:
        cfg.parallel.check_model(m.num_heads, m.ffn_dim)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def pack_patch(cfg: ExperimentConfig, kind: str) -> tuple[int, int, int]:
    """What one DiT token covers in the loader's tensors: pixels (curated data: the VAE's downsampling times
    the model's patch) or latent positions (latent data: the model's patch)."""
    pt, ph, pw = cfg.model.patch_size
    if kind == "latent":
        return pt, ph, pw
    ft, fs = vae_factors(cfg)
    return ft * pt, fs * ph, fs * pw


def check_packing(cfg: ExperimentConfig, kinds: set[str]) -> None:
    """`data.pack_tokens` against the model, the data kind and the layout; ConfigError (one line)."""
    data = cfg.data
    if data.pack_tokens is None:
        return
    if cfg.parallel.encoders != "replicated":
        raise ConfigError(f"data.pack_tokens needs parallel.encoders=replicated (got {cfg.parallel.encoders}): "
                          "packed batches are encoded by the ranks that train on them")
    for kind in sorted(kinds):
        want = pack_patch(cfg, kind)
        if tuple(data.patch) != want:
            raise ConfigError(f"data.patch {list(data.patch)} must be what one DiT token covers in {kind} data, "
                              f"{list(want)}, when data.pack_tokens is set (--set data.patch=[{','.join(map(str, want))}])")
    if "curated" in kinds:
        smallest = min(data.bucket_list(), key=lambda b: data.tokens((b.num_frames, b.height, b.width)))
        need = data.tokens((smallest.num_frames, smallest.height, smallest.width))
        if data.pack_tokens < need:
            raise ConfigError(f"data.pack_tokens {data.pack_tokens} is smaller than one sample: the smallest "
                              f"bucket {smallest.num_frames}x{smallest.height}x{smallest.width} needs {need} tokens")


def _deep_update(dst: dict, src: dict, where: str) -> None:
    for k, v in src.items():
        key = f"{where}.{k}" if where else k
        if k not in dst:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(dst))})")
        if isinstance(v, dict) and isinstance(dst[k], dict):
            _deep_update(dst[k], v, key)
        else:
            dst[k] = v


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    atomic_write_text(path, config_to_yaml(cfg))
