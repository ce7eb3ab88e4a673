"""Training checkpoints with torch.distributed.checkpoint (DCP).

RUN/checkpoints/step-NNNNNNN/ holds
  - DCP files: "model", "optim" (sharded like the live model, so any layout can load them) and "ema";
  - rank-RRRRR.json: what differs per rank or is not a tensor: step, scheduler, EMA counter, loader state;
  - rank-RRRRR.rng.safetensors: the torch RNG states of that rank.
A checkpoint is written under step-NNNNNNN.tmp and renamed once every rank has finished, so a folder
without the suffix is always complete. Reading never executes anything stored in a checkpoint
(diffusion.safe_dcp); `usable_checkpoints` lists the complete ones newest first, checked without loading
weights, and says why the damaged ones were passed over.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from dataload.files import atomic_write_text, read_regular
from diffusion.safe_dcp import (
    MAX_RECORD_BYTES,
    MAX_RNG_BYTES,
    CheckpointError,
    load_kwargs,
    read_metadata,
    unwrap,
    verify_checkpoint,
)

_STEP_RE = re.compile(r"^step-(\d{7})$")


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step-{step:07d}"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_RE.match(p.name)) and p.is_dir() and not p.is_symlink()]
    return sorted(found)


def latest_checkpoint(run: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def usable_checkpoints(run: Path) -> tuple[list[tuple[int, Path]], list[tuple[int, str]]]:
    """(complete checkpoints newest first, (step, why) for each damaged one)."""
    good: list[tuple[int, Path]] = []
    damaged: list[tuple[int, str]] = []
    for step, path in reversed(list_checkpoints(run)):
        try:
            verify_checkpoint(path, step)
        except CheckpointError as exc:
            damaged.append((step, f"{path.name} is damaged ({exc})"))
            continue
        good.append((step, path))
    return good, damaged


def _disk_full(folder: Path) -> bool:
    """Whether a small write into `folder` fails for lack of space."""
    probe = folder / f".space-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        return False
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    finally:
        probe.unlink(missing_ok=True)


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


def save_checkpoint(run: Path, step: int, *, model: nn.Module | None, optimizer: torch.optim.Optimizer | None,
                    ema=None, scheduler=None, loader_state: Any = None, extra: dict | None = None,
                    only: Callable[[str], bool] | None = None, process_group=None) -> Path:
    """Write step `step` of RUN (collective over every rank of the job). `only`: which model tensors to
    keep (LoRA keeps its adapters; the frozen base is referenced by the run, not copied). A rank without
    a model (a disjoint encoder rank) writes only its record; `process_group` is the group of the ranks
    that hold the model (DCP's collectives run over it)."""
    final = checkpoint_dir(run, step)
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    try:
        _save(tmp, final, step, model, optimizer, ema, scheduler, loader_state, extra, only, process_group)
    except BaseException:
        if _rank() == 0:  # a full disk or an interrupt: leave no half-written checkpoint behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _save(tmp: Path, final: Path, step: int, model, optimizer, ema, scheduler, loader_state, extra, only,
          process_group) -> None:
    if model is not None:
        _save_state(tmp, model, optimizer, ema, only, process_group)
    rank = _rank()
    meta = {"step": step, "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "ema_num_updates": ema.num_updates if ema is not None else None,
            "loader": loader_state, "extra": extra or {}}
    atomic_write_text(tmp / f"rank-{rank:05d}.json", json.dumps(meta))
    save_file({k: v.contiguous() for k, v in _rng_state().items()}, str(tmp / f"rank-{rank:05d}.rng.safetensors"))
    _barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    _barrier()


def _save_state(tmp: Path, model, optimizer, ema, only, process_group) -> None:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    if only is not None:
        model_sd = {k: v for k, v in model_sd.items() if only(k)}
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if ema is not None:
        state["ema"] = ema.shadow
    try:
        dcp.save(state, checkpoint_id=str(tmp), process_group=process_group)
    except CheckpointException as exc:  # a BaseException: turn it into what it wraps
        error = unwrap(exc, tmp)
        if not isinstance(error, OSError) and _disk_full(tmp):
            # torch.save's zip writer reports a full disk as a position mismatch; say what it is
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from None
        raise error from None


def load_checkpoint(path: Path, *, model: nn.Module | None, optimizer: torch.optim.Optimizer | None = None,
                    ema=None, scheduler=None, restore_rng: bool = True,
                    only: Callable[[str], bool] | None = None, process_group=None) -> dict:
    """Restore in place; returns this rank's json record (step, loader state, extra). `only`: the model
    tensors the checkpoint holds (as saved with the same `only`). A rank without a model reads its record
    only; `process_group`: the ranks that hold the model."""
    path = Path(path)
    if model is not None:
        _load_state(path, model, optimizer, ema, only, process_group)
    return _load_record(path, ema, scheduler, restore_rng)


def _load_state(path: Path, model, optimizer, ema, only, process_group) -> None:
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    else:
        state = {"model": get_state_dict(model, [])[0]}
    if only is not None:
        state["model"] = {k: v for k, v in state["model"].items() if only(k)}
    if ema is not None:
        state["ema"] = ema.shadow
    try:
        dcp.load(state, checkpoint_id=str(path), process_group=process_group, **load_kwargs(path))
    except CheckpointException as exc:  # a BaseException: turn it into what it wraps
        raise unwrap(exc, path) from None
    options = StateDictOptions(strict=only is None)
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=options)
    else:
        set_state_dict(model, [], model_state_dict=state["model"], optim_state_dict={}, options=options)


def _load_record(path: Path, ema, scheduler, restore_rng: bool) -> dict:
    rank = _rank()
    meta_path = path / f"rank-{rank:05d}.json"
    if not meta_path.is_file():  # another world size: rank 0's record still says the step
        meta_path = path / "rank-00000.json"
    meta = json.loads(read_regular(meta_path, "checkpoint record", MAX_RECORD_BYTES))
    if ema is not None and meta.get("ema_num_updates") is not None:
        ema.num_updates = int(meta["ema_num_updates"])
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    rng_path = path / f"rank-{rank:05d}.rng.safetensors"
    if restore_rng and rng_path.is_file():
        rng = load_safetensors(read_regular(rng_path, "RNG state", MAX_RNG_BYTES))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return meta


def load_sharded_weights(path: Path, model: nn.Module, *, prefer_ema: bool = True,
                         rename: Callable[[str], str] | None = None) -> str:
    """Load a checkpoint's weights (EMA when present and preferred) into a model that may be sharded
    (each rank reads its own pieces); returns "ema" or "model". `rename` maps this model's tensor names
    to the checkpoint's (a LoRA-wrapped base reads the plain model's weights); tensors the checkpoint
    does not name are left as they are (LoRA adapters)."""
    path = Path(path)
    verify_checkpoint(path, records=False)
    keys = set(read_metadata(path).state_dict_metadata)
    source = "ema" if prefer_ema and any(k.startswith("ema.") for k in keys) else "model"
    ours = dict(model.state_dict())
    params = {n for n, _ in model.named_parameters()}
    state: dict[str, dict] = {"model": {}, "ema": {}}
    for name, tensor in ours.items():
        theirs = rename(name) if rename is not None else name
        section = "ema" if source == "ema" and name in params else "model"
        if f"{section}.{theirs}" in keys:
            state[section][theirs] = tensor
    state = {k: v for k, v in state.items() if v}
    try:
        dcp.load(state, checkpoint_id=str(path), **load_kwargs(path))
    except CheckpointException as exc:
        raise unwrap(exc, path) from None
    return source


def load_checkpoint_tensors(path: Path, select: Callable[[str], bool], *, prefer_ema: bool = True
                            ) -> tuple[dict[str, torch.Tensor], str]:
    """The model tensors of a checkpoint whose names `select` accepts, read without a model or a process
    group (shapes and dtypes from its metadata): ({name: tensor}, "ema" | "model")."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = Path(path)
    verify_checkpoint(path, records=False)
    meta = read_metadata(path).state_dict_metadata
    has_ema = any(k.startswith("ema.") and select(k[4:]) for k in meta)
    source = "ema" if prefer_ema and has_ema else "model"
    wanted = {k[len(source) + 1:]: m for k, m in meta.items()
              if k.startswith(source + ".") and select(k[len(source) + 1:]) and isinstance(m, TensorStorageMetadata)}
    state = {source: {name: torch.empty(tuple(m.size), dtype=m.properties.dtype) for name, m in wanted.items()}}
    if wanted:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            try:
                dcp.load(state, checkpoint_id=str(path), no_dist=True, **load_kwargs(path))
            except CheckpointException as exc:
                raise unwrap(exc, path) from None
    return state[source], source


def load_weights(path: Path, model: nn.Module, *, prefer_ema: bool = True) -> str:
    """Load a checkpoint's weights into an unsharded model without a process group; returns "ema"/"model".

    The checkpoint is checked first (CheckpointError names what is damaged), and a failure while reading
    its tensors (a wrong shape, damaged bytes) is a CheckpointError too."""
    path = Path(path)
    verify_checkpoint(path, records=False)
    with warnings.catch_warnings():
        # loading in one process on purpose; DCP warns about it even with no_dist=True
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        try:
            return _load_weights(path, model, prefer_ema)
        except CheckpointError:
            raise
        except CheckpointException as exc:
            raise unwrap(exc, path) from None
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot load its weights ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _load_weights(path: Path, model: nn.Module, prefer_ema: bool) -> str:
    keys = read_metadata(path).state_dict_metadata.keys()
    has_ema = any(k.startswith("ema.") for k in keys)
    source = "ema" if prefer_ema and has_ema else "model"
    sd = {name: t.detach().clone() for name, t in model.state_dict().items()}
    if source == "ema":
        params = {n for n, _ in model.named_parameters()}
        state = {"ema": {k: v for k, v in sd.items() if k in params}}
        buffers = {k: v for k, v in sd.items() if k not in params}
        if buffers:
            state["model"] = buffers
        dcp.load(state, checkpoint_id=str(path), no_dist=True, **load_kwargs(path))
        merged = {**state.get("model", {}), **state["ema"]}
    else:
        state = {"model": sd}
        dcp.load(state, checkpoint_id=str(path), no_dist=True, **load_kwargs(path))
        merged = state["model"]
    model.load_state_dict(merged)
    return source


__all__ = ["CheckpointError", "StateDictOptions", "checkpoint_dir", "latest_checkpoint", "list_checkpoints",
           "load_checkpoint", "load_weights", "save_checkpoint", "usable_checkpoints"]
