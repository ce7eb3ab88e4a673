"""Generation: load a trained model (RUN, one checkpoint, or a diffusers Wan folder), sample, decode, write mp4.

With a context-parallel group every rank runs the sampler on the same seeded noise and the DiT
shards the token sequence inside; the gathered output is identical on every rank, and rank 0
decodes and writes the video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from dataload.files import atomic_write_text
from diffusion.checkpoint import load_weights, usable_checkpoints
from diffusion.config import ExperimentConfig, load_config
from diffusion.errors import UserError

EXPORT_EXTRA = "vfm"  # beside a diffusers export: config.yaml and text_encoder/ for vfm-generate


@dataclass
class Loaded:
    cfg: ExperimentConfig
    model: torch.nn.Module
    text_encoder: object
    vae: object
    weights: str  # what was loaded, for the log line


def _text_encoder_dir(base: Path, cfg: ExperimentConfig) -> str:
    local = base / "text_encoder"
    if (local / "text_encoder.json").is_file() or (local / "config.json").is_file():
        return str(local)
    if cfg.text.path is None:
        raise UserError(f"{base}: no text_encoder/ folder and the config names no text encoder path")
    return cfg.text.path


def _components(cfg: ExperimentConfig, text_dir: str):
    from diffusion.text_encoder import TextEncoder
    from diffusion.vae import VideoVAE

    te_cfg = cfg.text if text_dir == cfg.text.path else replace(cfg.text, path=None)
    try:
        text_encoder = TextEncoder.from_pretrained(text_dir, te_cfg)
    except Exception as exc:  # a damaged or foreign folder: the user's files, not our bug
        raise UserError(f"{text_dir}: cannot load the text encoder ({_short(exc)})") from None
    try:
        vae = VideoVAE(cfg.vae)
    except Exception as exc:
        raise UserError(f"cannot load the VAE {cfg.vae.path or cfg.vae.kind} ({_short(exc)})") from None
    return text_encoder, vae


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _from_diffusers(path: Path):
    from diffusion.dit.convert import from_diffusers

    try:
        return from_diffusers(str(path))
    except Exception as exc:  # damaged weights, wrong shapes, a foreign config
        raise UserError(f"{path}: cannot load the model ({_short(exc)})") from None


def _is_dcp(path: Path) -> bool:
    return (path / ".metadata").is_file()


def run_checkpoint(run: Path, warn=None) -> Path:
    """RUN's newest complete checkpoint; damaged newer ones are passed over (reported through `warn`)."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a training run (no config.yaml)")
    good, damaged = usable_checkpoints(run)
    if not good:
        why = f" ({damaged[0][1]})" if damaged else ""
        raise UserError(f"{run}: no complete checkpoint{why}")
    if warn is not None:
        for step, why in damaged:
            if step > good[0][0]:
                warn(f"{why}; using {good[0][1].name}")
    return good[0][1]


def load_run(run: Path, prefer_ema: bool = True) -> Loaded:
    return _load_dcp(run_checkpoint(run), Path(run), prefer_ema)


def _checkpoint_folder(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--checkpoint {path}: no such folder")
    return path


def _run_of(ckpt: Path) -> Path:
    """The training run a DCP checkpoint folder (RUN/checkpoints/step-N) belongs to."""
    run = ckpt.parent.parent
    if not (run / "config.yaml").is_file():
        raise UserError(f"{ckpt}: a checkpoint outside a training run (no {run / 'config.yaml'})")
    return run


def source_config(path: Path) -> ExperimentConfig:
    """The experiment config of what `load_checkpoint_dir(path)` would load, without loading weights."""
    path = _checkpoint_folder(path)
    if _is_dcp(path):
        return load_config(str(_run_of(path) / "config.yaml"))
    if (path / EXPORT_EXTRA / "config.yaml").is_file():
        return load_config(str(path / EXPORT_EXTRA / "config.yaml"))
    if (path / "model_index.json").is_file():
        from diffusion.init_from import pipeline_config

        return pipeline_config(path, load_config("wan-1.3b"), f"--checkpoint {path}")
    if (path / "config.json").is_file():
        from diffusion.dit.convert import config_from_diffusers, read_diffusers_config

        cfg = load_config("wan-1.3b")
        folder = path / "transformer" if (path / "transformer").is_dir() else path
        try:
            cfg.model = config_from_diffusers(read_diffusers_config(str(folder)))
        except ValueError as exc:
            raise UserError(f"--checkpoint {path}: {exc}") from None
        return cfg
    raise UserError(f"--checkpoint {path}: neither a checkpoint nor a diffusers model folder")


def _load_dcp(ckpt: Path, run: Path, prefer_ema: bool) -> Loaded:
    from diffusion.dit import VideoDiT

    cfg = load_config(str(run / "config.yaml"))
    if cfg.train.lora.enabled:
        model = base_model(run, cfg)
        source = _merge_checkpoint_adapters(model, ckpt, cfg.train.lora.scale, prefer_ema)
    else:
        model = VideoDiT(cfg.model)
        source = load_weights(ckpt, model, prefer_ema=prefer_ema)
    te, vae = _components(cfg, _text_encoder_dir(run, cfg))
    return Loaded(cfg, model.eval(), te, vae, f"{ckpt.name} ({source} weights)")


def base_model(run: Path, cfg: ExperimentConfig):
    """The frozen base of a LoRA run: what it started from (RUN/run.json's init_from), or its seeded
    initialisation when it started from scratch."""
    from diffusion.dit import VideoDiT
    from diffusion.dit.weights import SeededInit, fill

    try:
        init = json.loads((Path(run) / "run.json").read_text()).get("init_from")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{run}: run.json is missing or unreadable") from None
    if init is None:
        model = VideoDiT(cfg.model)
        fill(model, SeededInit(model, cfg.train.seed))
        return model
    if init["kind"] == "checkpoint":
        model = VideoDiT(cfg.model)
        load_weights(Path(init["weights"]), model, prefer_ema=True)
        return model
    return _from_diffusers(Path(init["weights"]))


def _merge_checkpoint_adapters(model, ckpt: Path, scale: float, prefer_ema: bool = True) -> str:
    from diffusion.checkpoint import load_checkpoint_tensors
    from diffusion.lora import is_adapter, merge_into, normalize_names

    adapters, source = load_checkpoint_tensors(ckpt, is_adapter, prefer_ema=prefer_ema)
    if not adapters:
        raise UserError(f"{ckpt}: holds no LoRA adapters")
    merge_into(model, normalize_names(adapters), scale)
    return f"{source} LoRA"


def apply_lora(model, path: str | Path, scale: float = 1.0) -> str:
    """Merge LoRA adapters into `model`: a diffusers-format file (or a folder holding
    pytorch_lora_weights.safetensors) or a LoRA run of ours (or one of its checkpoints)."""
    from diffusion.lora import merge_into, read_lora_file

    p = Path(path)
    if p.is_dir() and ((p / ".metadata").exists() or (p / "checkpoints").is_dir()):
        ckpt = p if (p / ".metadata").exists() else run_checkpoint(p)
        run = ckpt.parent.parent
        cfg = load_config(str(run / "config.yaml"))
        if not cfg.train.lora.enabled:
            raise UserError(f"--lora {path}: not a LoRA run (train.lora.rank is 0)")
        return _merge_checkpoint_adapters(model, ckpt, scale * cfg.train.lora.scale)
    try:
        adapters, file_scale = read_lora_file(p)
        changed = merge_into(model, adapters, scale * file_scale)
    except (OSError, ValueError) as exc:
        raise UserError(f"--lora {path}: {' '.join(str(exc).split())}") from None
    if not changed:
        raise UserError(f"--lora {path}: no adapter matches this model")
    return f"LoRA {p.name} x{scale:g}"


def load_checkpoint_dir(path: Path) -> Loaded:
    """One DCP checkpoint folder (inside a RUN), or a diffusers-format Wan folder (model or pipeline)."""
    path = _checkpoint_folder(path)
    if _is_dcp(path):
        return _load_dcp(path, _run_of(path), True)
    if (path / "model_index.json").is_file():
        # a diffusers WanPipeline folder: transformer/, text_encoder/ + tokenizer/, vae/
        from diffusion.init_from import pipeline_config

        cfg = pipeline_config(path, load_config("wan-1.3b"), f"--checkpoint {path}")
        model = _from_diffusers(path)
        te, vae = _components(cfg, str(path))
        return Loaded(cfg, model.eval(), te, vae, "diffusers pipeline")
    if (path / "config.json").is_file():
        extra = path / EXPORT_EXTRA
        if not (extra / "config.yaml").is_file():
            raise UserError(f"{path}: a diffusers transformer folder without text encoder and VAE; pass the "
                            "whole pipeline folder (with model_index.json) or a `vfm-train export` folder")
        cfg = load_config(str(extra / "config.yaml"))
        model = _from_diffusers(path)
        te, vae = _components(cfg, _text_encoder_dir(extra, cfg))
        return Loaded(cfg, model.eval(), te, vae, "diffusers export")
    raise UserError(f"--checkpoint {path}: neither a DCP checkpoint nor a diffusers model folder")


def default_video_size(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(frames, height, width) of the first training bucket."""
    bucket = tuple(cfg.data.buckets[0])
    frames = bucket[0] if len(bucket) == 3 else cfg.data.num_frames
    return int(frames), int(bucket[-2]), int(bucket[-1])


@torch.no_grad()
def sample_latents(model, text_encoder, vae, cfg: ExperimentConfig, *, prompt: str, negative_prompt: str = "",
                   frames: int | None = None, height: int | None = None, width: int | None = None,
                   steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                   seed: int | None = None, device=None, dtype: torch.dtype = torch.float32,
                   progress=None) -> torch.Tensor:
    """Seeded latents (1, C, F, H, W) for one prompt; every rank of a CP group must call it alike."""
    from diffusion.sampling import sample

    f0, h0, w0 = default_video_size(cfg)
    shape = (1, *vae.latent_shape(frames or f0, height or h0, width or w0))
    scfg = cfg.sampler
    overrides = {k: v for k, v in dict(steps=steps, guidance=guidance, name=sampler, seed=seed).items()
                 if v is not None}
    scfg = replace(scfg, **overrides)
    device = device or torch.device("cpu")
    text, mask = text_encoder.encode([prompt])
    neg, neg_mask = text_encoder.encode([negative_prompt])
    text, mask, neg, neg_mask = (t.to(device) for t in (text, mask, neg, neg_mask))
    text, neg = text.to(dtype), neg.to(dtype)

    def model_fn(x, t, txt, m):
        return model(x.to(dtype), t, txt, m)

    return sample(model_fn, shape, text, mask, neg, neg_mask, config=scfg, model_dtype=dtype,
                  progress=progress if progress is not None else False)


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def write_video(video: torch.Tensor | np.ndarray, path: Path, fps: float = 8.0) -> Path:
    """H.264 yuv420p mp4 (the project's writer, dataload.h264), near-lossless, atomically; a `.npy`
    path gets the (T, H, W, 3) uint8 frames themselves (exact: what parity checks compare)."""
    from dataload.h264 import encode_frames

    frames = video if isinstance(video, np.ndarray) else to_uint8_frames(video)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        from dataload.files import atomic_output

        with atomic_output(path) as f:
            np.save(f, np.ascontiguousarray(frames), allow_pickle=False)
        return path
    return encode_frames(frames, path, fps=fps, crf=4)


def read_video(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of an mp4 (for tests and the demo report)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@dataclass
class GeneratePlan:
    run: str | None
    checkpoint: str | None
    prompt: str
    negative_prompt: str
    out: str
    frames: int | None
    height: int | None
    width: int | None
    steps: int | None
    guidance: float | None
    sampler: str | None
    seed: int | None
    fps: float | None
    cp: int
    tp: int = 1
    lora: str | None = None
    lora_scale: float = 1.0


def generate_rank(rank: int, world_size: int, *, plan: GeneratePlan) -> None:
    from parallel.device import rank_device

    device = rank_device().device
    loaded = load_run(Path(plan.run)) if plan.run else load_checkpoint_dir(Path(plan.checkpoint))
    if plan.lora:
        loaded.weights += " + " + apply_lora(loaded.model, plan.lora, plan.lora_scale)
    model = loaded.model.to(device)
    loaded.text_encoder.to(device)
    loaded.vae.to(device)
    if plan.cp * plan.tp > 1:
        # the model's own plan: tensor parallel over tp, the sequence over cp (Ulysses when each TP
        # rank's heads divide over cp, else ring)
        from diffusion.dit.parallelize import parallelize_dit
        from diffusion.trainer import build_parallel_state

        heads = loaded.cfg.model.num_heads // plan.tp
        par = build_parallel_state(1, plan.cp, "ulysses" if heads % plan.cp == 0 else "ring", tp=plan.tp)
        parallelize_dit(model, None, par.cp, tp_mesh=par.tp_mesh)
    from diffusion.monitor import progress_bar

    # denoising steps, then decode and write (rank 0's bar; quiet when stderr is not a terminal)
    bar = progress_bar((plan.steps or loaded.cfg.sampler.steps) + 2, "generate", enabled=rank == 0)
    latents = sample_latents(model, loaded.text_encoder, loaded.vae, loaded.cfg, prompt=plan.prompt,
                             negative_prompt=plan.negative_prompt, frames=plan.frames, height=plan.height,
                             width=plan.width, steps=plan.steps, guidance=plan.guidance, sampler=plan.sampler,
                             seed=plan.seed, device=device, progress=bar)
    if rank == 0:
        bar.set_postfix_str("decode")
        video = loaded.vae.decode(latents)
        bar.update(1)
        bar.set_postfix_str("write")
        fps = plan.fps or float(loaded.cfg.data.fps or 16.0)
        write_video(video[0], Path(plan.out), fps=fps)
        bar.update(1)
        info = {"out": plan.out, "weights": loaded.weights, "latent_shape": list(latents.shape)}
        atomic_write_text(Path(plan.out).with_suffix(".json"), json.dumps(info))
    bar.close()
