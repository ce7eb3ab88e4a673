"""Training checkpoints with torch.distributed.checkpoint (DCP).

RUN/checkpoints/step-NNNNNNN/ holds
  - DCP files: "model", "optim" (sharded like the live model, so any layout can load them) and "ema";
  - rank-RRRRR.json: what differs per rank or is not a tensor: step, scheduler, EMA counter, loader state;
  - rank-RRRRR.rng.safetensors: the torch RNG states of that rank.
A checkpoint is written under step-NNNNNNN.tmp and renamed once every rank has finished, so a folder
without the suffix is always complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

_STEP_RE = re.compile(r"^step-(\d{7})$")


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step-{step:07d}"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(run: Path, step: int, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ema=None, scheduler=None, loader_state: Any = None, extra: dict | None = None) -> Path:
    final = checkpoint_dir(run, step)
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if ema is not None:
        state["ema"] = ema.shadow
    dcp.save(state, checkpoint_id=str(tmp))
    rank = _rank()
    meta = {"step": step, "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "ema_num_updates": ema.num_updates if ema is not None else None,
            "loader": loader_state, "extra": extra or {}}
    (tmp / f"rank-{rank:05d}.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in _rng_state().items()}, str(tmp / f"rank-{rank:05d}.rng.safetensors"))
    _barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    _barrier()
    return final


def load_checkpoint(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    ema=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Restore in place; returns this rank's json record (step, loader state, extra)."""
    path = Path(path)
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    else:
        state = {"model": get_state_dict(model, [])[0]}
    if ema is not None:
        state["ema"] = ema.shadow
    dcp.load(state, checkpoint_id=str(path))
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        set_state_dict(model, [], model_state_dict=state["model"], optim_state_dict={})
    rank = _rank()
    meta_path = path / f"rank-{rank:05d}.json"
    if not meta_path.is_file():  # another world size: rank 0's record still says the step
        meta_path = path / "rank-00000.json"
    meta = json.loads(meta_path.read_text())
    if ema is not None and meta.get("ema_num_updates") is not None:
        ema.num_updates = int(meta["ema_num_updates"])
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    rng_path = path / f"rank-{rank:05d}.rng.safetensors"
    if restore_rng and rng_path.is_file():
        rng = load_file(str(rng_path))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return meta


def load_weights(path: Path, model: nn.Module, *, prefer_ema: bool = True) -> str:
    """Load a checkpoint's weights into an unsharded model without a process group; returns "ema"/"model"."""
    path = Path(path)
    with warnings.catch_warnings():
        # loading in one process on purpose; DCP warns about it even with no_dist=True
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        return _load_weights(path, model, prefer_ema)


def _load_weights(path: Path, model: nn.Module, prefer_ema: bool) -> str:
    reader = dcp.FileSystemReader(str(path))
    keys = reader.read_metadata().state_dict_metadata.keys()
    has_ema = any(k.startswith("ema.") for k in keys)
    source = "ema" if prefer_ema and has_ema else "model"
    sd = {name: t.detach().clone() for name, t in model.state_dict().items()}
    if source == "ema":
        params = {n for n, _ in model.named_parameters()}
        state = {"ema": {k: v for k, v in sd.items() if k in params}}
        buffers = {k: v for k, v in sd.items() if k not in params}
        if buffers:
            state["model"] = buffers
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
        merged = {**state.get("model", {}), **state["ema"]}
    else:
        state = {"model": sd}
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
        merged = state["model"]
    model.load_state_dict(merged)
    return source


__all__ = ["StateDictOptions", "checkpoint_dir", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
           "load_weights", "save_checkpoint"]
