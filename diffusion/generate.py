"""Generation: load a trained model (RUN, one checkpoint, or a diffusers Wan folder), sample, decode, write mp4.

With a context-parallel group every rank runs the sampler on the same seeded noise and the DiT
shards the token sequence inside; the gathered output is identical on every rank, and rank 0
decodes and writes the video.
"""

from __future__ import annotations

import json
import os
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


def source_config(path: Path) -> ExperimentConfig:
    """The experiment config of what `load_checkpoint_dir(path)` would load, without loading weights."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--checkpoint {path}: no such folder")
    if _is_dcp(path):
        run = path.parent.parent
        if not (run / "config.yaml").is_file():
            raise UserError(f"{path}: a checkpoint outside a training run (no {run / 'config.yaml'})")
        return load_config(str(run / "config.yaml"))
    if (path / EXPORT_EXTRA / "config.yaml").is_file():
        return load_config(str(path / EXPORT_EXTRA / "config.yaml"))
    if (path / "model_index.json").is_file() or (path / "config.json").is_file():
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
    model = VideoDiT(cfg.model)
    source = load_weights(ckpt, model, prefer_ema=prefer_ema)
    te, vae = _components(cfg, _text_encoder_dir(run, cfg))
    return Loaded(cfg, model.eval(), te, vae, f"{ckpt.name} ({source} weights)")


def load_checkpoint_dir(path: Path) -> Loaded:
    """One DCP checkpoint folder (inside a RUN), or a diffusers-format Wan folder (model or pipeline)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--checkpoint {path}: no such folder")
    if _is_dcp(path):
        run = path.parent.parent
        if not (run / "config.yaml").is_file():
            raise UserError(f"{path}: a checkpoint outside a training run (no {run / 'config.yaml'})")
        return _load_dcp(path, run, True)
    if (path / "model_index.json").is_file():
        # a diffusers WanPipeline folder: transformer/, text_encoder/ + tokenizer/, vae/
        cfg = load_config("wan-1.3b")
        cfg.text = replace(cfg.text, path=str(path))
        cfg.vae = replace(cfg.vae, path=str(path))
        model = _from_diffusers(path)
        cfg.model = model.config
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
                   seed: int | None = None, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
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

    return sample(model_fn, shape, text, mask, neg, neg_mask, config=scfg, model_dtype=dtype)


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def write_video(video: torch.Tensor | np.ndarray, path: Path, fps: float = 8.0) -> Path:
    """H.264 yuv420p mp4 through PyAV, atomically; odd sizes are padded to even by edge repeat."""
    frames = video if isinstance(video, np.ndarray) else to_uint8_frames(video)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        _encode(frames, tmp, fps)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves nothing behind
        raise
    os.replace(tmp, path)
    return path


def _encode(frames: np.ndarray, tmp: Path, fps: float) -> None:
    from fractions import Fraction

    import av

    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # near-lossless and single-threaded: the same frames give the same bytes
        stream.options = {"crf": "4", "preset": "medium", "threads": "1"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


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


def generate_rank(rank: int, world_size: int, *, plan: GeneratePlan) -> None:
    import torch.distributed as dist

    loaded = load_run(Path(plan.run)) if plan.run else load_checkpoint_dir(Path(plan.checkpoint))
    model = loaded.model
    if plan.cp > 1:
        from parallel.layout import ParallelLayout

        layout = ParallelLayout(name="generate", cp=plan.cp).build(backend=dist.get_backend())
        model.set_context_parallel(layout.context_parallel("ulysses" if loaded.cfg.model.num_heads % plan.cp == 0
                                                           else "ring"))
    latents = sample_latents(model, loaded.text_encoder, loaded.vae, loaded.cfg, prompt=plan.prompt,
                             negative_prompt=plan.negative_prompt, frames=plan.frames, height=plan.height,
                             width=plan.width, steps=plan.steps, guidance=plan.guidance, sampler=plan.sampler,
                             seed=plan.seed)
    if rank == 0:
        video = loaded.vae.decode(latents)
        fps = plan.fps or float(loaded.cfg.data.fps or 16.0)
        write_video(video[0], Path(plan.out), fps=fps)
        info = {"out": plan.out, "weights": loaded.weights, "latent_shape": list(latents.shape)}
        atomic_write_text(Path(plan.out).with_suffix(".json"), json.dumps(info))
