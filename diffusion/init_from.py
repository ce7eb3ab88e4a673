"""`vfm-train fit --init-from PATH`: where a run's starting weights come from.

PATH may be
- a diffusers Wan transformer folder (config.json + safetensors), or a whole pipeline folder
  (model_index.json with transformer/, text_encoder/ + tokenizer/, vae/): the model's config comes from
  it, and from a pipeline folder the text encoder and the Wan VAE too;
- a `vfm-train export` folder (diffusers weights + vfm/config.yaml and vfm/text_encoder);
- a checkpoint of ours (a step-NNNNNNN folder, or a RUN: its newest complete checkpoint), loaded by DCP
  (EMA weights when present), with that run's model config and text encoder.
Weights are only ever read from safetensors or through the safe DCP reader: nothing executes.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from diffusion.config import ExperimentConfig, check_experiment, load_config
from diffusion.errors import UserError

KINDS = ("diffusers", "pipeline", "export", "checkpoint")


@dataclass
class InitSource:
    path: str  # what the user named, resolved
    kind: str  # one of KINDS
    weights: str  # the folder holding the weights (a transformer folder or a checkpoint)
    text_encoder: str | None = None  # a text encoder folder of ours to copy into RUN
    run_config: str | None = None  # our config.yaml that came with it (export, checkpoint)

    def record(self) -> dict:
        return {"path": self.path, "kind": self.kind, "weights": self.weights}


def resolve(path: str | Path) -> InitSource:
    from diffusion.checkpoint import usable_checkpoints

    p = Path(path).resolve()
    if not p.exists():
        raise UserError(f"--init-from {path}: no such file or folder")
    if not p.is_dir():
        raise UserError(f"--init-from {path}: not a folder")
    if (p / ".metadata").exists():
        run = p.parent.parent
        if not (run / "config.yaml").is_file():
            raise UserError(f"--init-from {path}: a checkpoint outside a training run (no {run / 'config.yaml'})")
        return InitSource(str(p), "checkpoint", str(p), _te(run), str(run / "config.yaml"))
    if (p / "config.yaml").is_file() and (p / "checkpoints").is_dir():
        good, damaged = usable_checkpoints(p)
        if not good:
            why = f" ({damaged[0][1]})" if damaged else ""
            raise UserError(f"--init-from {path}: the run has no complete checkpoint{why}")
        return InitSource(str(p), "checkpoint", str(good[0][1]), _te(p), str(p / "config.yaml"))
    if (p / "model_index.json").is_file():
        if not (p / "transformer" / "config.json").is_file():
            raise UserError(f"--init-from {path}: a pipeline folder without transformer/config.json")
        return InitSource(str(p), "pipeline", str(p / "transformer"))
    if (p / "config.json").is_file():
        if (p / "vfm" / "config.yaml").is_file():
            return InitSource(str(p), "export", str(p), _te(p / "vfm"), str(p / "vfm" / "config.yaml"))
        return InitSource(str(p), "diffusers", str(p))
    raise UserError(f"--init-from {path}: neither a diffusers/exported model folder nor a checkpoint of ours")


def _te(folder: Path) -> str | None:
    te = folder / "text_encoder"
    return str(te) if te.is_dir() else None


def apply(cfg: ExperimentConfig, src: InitSource) -> ExperimentConfig:
    """The experiment config with the model (and, from a pipeline, the text encoder and VAE) of `src`;
    the training, data and sampler settings stay the user's."""
    from diffusion.dit.convert import config_from_diffusers, read_diffusers_config

    cfg = dataclasses.replace(cfg)
    if src.run_config is not None:
        theirs = load_config(src.run_config)
        cfg.model, cfg.vae = theirs.model, theirs.vae
        cfg.text = replace(theirs.text) if src.text_encoder is None else replace(theirs.text, path=None)
    elif src.kind == "pipeline":
        cfg = pipeline_config(Path(src.path), cfg, f"--init-from {src.path}")
    else:
        try:
            cfg.model = config_from_diffusers(read_diffusers_config(src.weights))
        except (OSError, ValueError) as exc:
            raise UserError(f"--init-from {src.path}: {' '.join(str(exc).split())}") from None
    check_experiment(cfg)
    return cfg


def pipeline_config(folder: Path, cfg: ExperimentConfig, what: str) -> ExperimentConfig:
    """`cfg` with the parts a diffusers Wan pipeline folder holds: the transformer's config, its UMT5 text
    encoder and tokenizer (in the dtype the folder stores), its Wan VAE."""
    import json

    from diffusion.dit.convert import config_from_diffusers, read_diffusers_config

    cfg = dataclasses.replace(cfg)
    try:
        cfg.model = config_from_diffusers(read_diffusers_config(str(folder / "transformer")))
    except (OSError, ValueError) as exc:
        raise UserError(f"{what}: {' '.join(str(exc).split())}") from None
    if (folder / "text_encoder").is_dir():
        dtype = "float32"
        try:
            te = json.loads((folder / "text_encoder" / "config.json").read_text())
            dtype = str(te.get("torch_dtype") or te.get("dtype") or "float32")
        except (OSError, ValueError, AttributeError):
            pass
        cfg.text = replace(cfg.text, kind="umt5", path=str(folder), subfolder_model="text_encoder",
                           subfolder_tokenizer="tokenizer", dim=cfg.model.text_dim,
                           dtype=dtype if dtype in ("float32", "bfloat16", "float16") else "float32")
    if (folder / "vae").is_dir():
        cfg.vae = replace(cfg.vae, kind="wan", path=str(folder), subfolder="vae")
    return cfg


def copy_text_encoder(src: InitSource, run: Path) -> bool:
    """Our text encoder folder that came with `src`, copied into RUN (True when there was one)."""
    if src.text_encoder is None:
        return False
    shutil.copytree(src.text_encoder, run / "text_encoder")
    return True
