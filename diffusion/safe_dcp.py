"""Reading torch.distributed.checkpoint (DCP) folders without ever executing what they contain.

DCP's own reader unpickles `.metadata` with plain `pickle` and loads non-tensor items ("bytes" items: an
optimizer's hyper-parameters) with `torch.load(weights_only=False)`: a crafted checkpoint runs code on
load. Here the metadata goes through an unpickler that admits only DCP's metadata classes, torch sizes and
dtypes (anything else is refused with one line naming it), every storage entry is checked to point at a
plain file inside the folder, and bytes items load with `torch.load(weights_only=True)`.

`verify_checkpoint` checks a whole checkpoint of ours (metadata, data files, per-rank records and RNG
states) without loading weights, so a damaged checkpoint is found before any rank starts.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.planner import ReadItem

from dataload.files import FileTooLargeError, NotRegularFileError, read_regular, regular_file_size

METADATA_FILE = ".metadata"
MAX_METADATA_BYTES = 512 << 20  # a 14B model's metadata is a few MB
MAX_RECORD_BYTES = 64 << 20  # rank-RRRRR.json (loader state included)
MAX_RNG_BYTES = 1 << 20

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    (_DCP_METADATA, name) for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class CheckpointError(Exception):
    """A checkpoint folder that is damaged, incomplete or hostile; the message says which file and why."""


# Opcodes DCP metadata never holds and whose C implementation is unsafe on hostile input: a truncated
# BYTEARRAY8 makes CPython 3.11's unpickler print a SystemError straight to stderr; out-of-band buffers
# and persistent ids have no meaning in a file.
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID", "BINPERSID"}


def _check_opcodes(data: bytes) -> None:
    """Parse the pickle's opcodes in pure Python first (no allocation from a stated length, no code run):
    a truncated or malformed stream, or an opcode metadata never uses, is refused before the C unpickler
    sees it (about 0.15 s per MB)."""
    try:
        for op, _, _ in pickletools.genops(data):
            if op.name in _REFUSED_OPCODES:
                raise CheckpointError(f"holds the pickle opcode {op.name}, which checkpoint metadata never uses")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"not a readable checkpoint metadata file ({type(exc).__name__})") from None


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise CheckpointError(f"refuses to load {module}.{name}: not a checkpoint metadata type")


def read_metadata(folder: str | os.PathLike):
    """The DCP Metadata of `folder`, read safely and checked; CheckpointError otherwise."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(folder) / METADATA_FILE
    try:
        data = read_regular(path, "checkpoint metadata", MAX_METADATA_BYTES)
    except (FileNotFoundError, NotRegularFileError, FileTooLargeError) as exc:
        raise CheckpointError(str(exc)) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        _check_opcodes(data)
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # any malformed pickle: truncated, wrong opcodes, bad arguments
        raise CheckpointError(f"{path}: not a readable checkpoint metadata file ({type(exc).__name__})") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.state_dict_metadata, dict):
        raise CheckpointError(f"{path}: not a checkpoint metadata file")
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise CheckpointError(f"{path}: no storage table")
    for info in storage.values():
        rel = getattr(info, "relative_path", None)
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not isinstance(rel, str) or not _SAFE_NAME.match(rel) or rel in (".", ".."):
            raise CheckpointError(f"{path}: a storage entry names {rel!r}, not a file inside the checkpoint")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise CheckpointError(f"{path}: a storage entry has a bad offset or length")
    return metadata


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata comes through `read_metadata` (restricted, checked)."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        if kwargs.get("rank") is not None:
            raise CheckpointError("per-rank metadata files are not used by this project")
        metadata = read_metadata(self.path)
        from torch.distributed.checkpoint.metadata import StorageMeta

        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner whose non-tensor items load with weights_only=True (plain data only)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"item {read_item.dest_index.fqn} is not plain data ({type(exc).__name__})") from None
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def unwrap(exc: BaseException, folder: str | os.PathLike) -> Exception:
    """DCP's CheckpointException (a BaseException holding each rank's error) as the error to report: the
    first rank's OSError itself (a full disk keeps its path and cause), else a CheckpointError naming
    the folder and the cause in one line."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        inner = failures[min(failures)][0]
        if isinstance(inner, KeyboardInterrupt):
            raise KeyboardInterrupt  # Ctrl-C while saving or loading: the interrupt itself
        if isinstance(inner, OSError):
            return inner
        if isinstance(inner, CheckpointError):
            return inner
        text = " ".join(str(inner).split()) or type(inner).__name__
        return CheckpointError(f"{folder}: {text[:300]}")
    if isinstance(exc, Exception):
        return exc
    return CheckpointError(f"{folder}: {type(exc).__name__}")


def load_kwargs(folder: str | os.PathLike) -> dict[str, Any]:
    """What to pass to `dcp.load` so that nothing in `folder` can execute."""
    return {"storage_reader": SafeReader(os.fspath(folder)), "planner": SafePlanner()}


# ------------------------------------------------------------------------------------------ whole checkpoints


def _check_data_files(folder: Path, metadata) -> None:
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(needed.items()):
        try:
            size = regular_file_size(folder / name, "checkpoint data file")
        except FileNotFoundError:
            raise CheckpointError(f"{folder / name}: checkpoint data file is missing") from None
        except OSError as exc:
            raise CheckpointError(str(exc)) from None
        if size < end:
            raise CheckpointError(f"{folder / name}: truncated ({size} bytes, needs {end})")


def _check_records(folder: Path, step: int | None) -> None:
    records = sorted(folder.glob("rank-*.json"))
    if not any(p.name == "rank-00000.json" for p in records):
        raise CheckpointError(f"{folder}: rank-00000.json is missing")
    for rec in records:
        try:
            meta = json.loads(read_regular(rec, "checkpoint record", MAX_RECORD_BYTES))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{rec}: not a readable record ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
            raise CheckpointError(f"{rec}: not a checkpoint record (no step)")
        if step is not None and meta["step"] != step:
            raise CheckpointError(f"{rec}: records step {meta['step']}, the folder says {step}")
    from safetensors.torch import load as load_safetensors

    for rng in sorted(folder.glob("rank-*.rng.safetensors")):
        try:
            tensors = load_safetensors(read_regular(rng, "RNG state", MAX_RNG_BYTES))
        except Exception as exc:
            raise CheckpointError(f"{rng}: not a readable RNG state ({type(exc).__name__})") from None
        state = tensors.get("torch")
        if state is None or state.dtype != torch.uint8 or state.ndim != 1:
            raise CheckpointError(f"{rng}: not a torch RNG state")


def verify_checkpoint(folder: str | os.PathLike, step: int | None = None, *, records: bool = True) -> None:
    """Raise CheckpointError unless `folder` is a complete, readable checkpoint (weights are not loaded)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    metadata = read_metadata(folder)
    _check_data_files(folder, metadata)
    if records:
        _check_records(folder, step)


__all__ = ["CheckpointError", "SafePlanner", "SafeReader", "load_kwargs", "read_metadata", "unwrap",
           "verify_checkpoint"]
