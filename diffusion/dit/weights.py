"""Putting weights into a VideoDiT whose parameters may be sharded (FSDP2/DTensor) or still unallocated.

A model is built on the meta device, sharded by its parallel plan, then materialised with `to_empty`;
`fill` then writes each rank's own slice of every parameter from a source, so no rank ever holds the
whole model:
- `SeededInit`: a fresh model. Every parameter is drawn from a generator seeded by (seed, its name), so
  the weights do not depend on how the model is sharded, on the rank, or on construction order: an
  eagerly built model filled from the same seed is identical.
- `DiffusersWeights`: a diffusers WanTransformer3DModel folder (or a whole pipeline folder, or our
  export), read through safetensors slices: only the rows a rank owns are read from disk.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from diffusion.dit.convert import _BLOCK, _TOP, read_diffusers_config
from parallel.tensor import local


def local_index(param: torch.Tensor) -> tuple[slice, ...]:
    """The slice of the full tensor that this rank's piece of `param` holds (all of it when not sharded)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return tuple(slice(0, n) for n in param.shape)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    return tuple(slice(o, o + n) for o, n in zip(offset, shape))


def named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


@torch.no_grad()
def fill(model: nn.Module, source, names: set[str] | None = None) -> list[str]:
    """Write every parameter and buffer (or those in `names`) from `source.read(name, index)`; returns the
    names written. `source.read` returns the slice `index` of the full tensor."""
    done = []
    for name, t in named_tensors(model):
        if names is not None and name not in names:
            continue
        index = local_index(t)
        piece = source.read(name, index)
        mine = local(t)
        if tuple(piece.shape) != tuple(mine.shape):
            raise ValueError(f"{name}: source gives {tuple(piece.shape)}, this rank holds {tuple(mine.shape)}")
        mine.copy_(piece.to(mine.dtype))
        done.append(name)
    return done


# ------------------------------------------------------------------------------------------ fresh weights


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SeededInit:
    """torch's default initialisation (uniform with bound 1/sqrt(fan_in) for linear and conv layers, ones
    and zeros for norms), Wan's randn/sqrt(dim) for modulation tables, peft's for LoRA (A like a linear
    layer, B zero); each tensor from its own (seed, name) generator."""

    def __init__(self, model: nn.Module, seed: int):
        self.seed = seed
        # a model may ask for some tensors to start at zero (e.g. an x0-predicting head)
        zero = tuple(getattr(model, "zero_init_prefixes", ()))
        self.kinds: dict[str, tuple[str, int, tuple[int, ...]]] = {}
        for mod_name, module in model.named_modules():
            for p_name, p in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                kind = "zeros" if _plain(full).startswith(zero) and zero else _kind(module, p_name, full)
                self.kinds[full] = (kind, _fan_in(module), tuple(p.shape))

    def read(self, name: str, index: tuple[slice, ...]) -> torch.Tensor:
        kind, fan_in, shape = self.kinds[name]
        # seeded by the plain model's name, so a base wrapped by LoRA starts as the plain model does
        g = torch.Generator().manual_seed(_seed_for(self.seed, _plain(name)))
        if kind == "ones":
            full = torch.ones(shape)
        elif kind == "zeros":
            full = torch.zeros(shape)
        elif kind == "modulation":
            full = torch.randn(shape, generator=g) / shape[-1] ** 0.5
        else:  # "uniform": torch's kaiming_uniform(a=sqrt(5)) bound, and the matching bias bound
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            full = torch.rand(shape, generator=g, dtype=torch.float64).mul_(2 * bound).sub_(bound).float()
        return full[index]


def _plain(name: str) -> str:
    """A parameter's name in the model without LoRA (peft moves a wrapped layer's weight to base_layer)."""
    return name.replace(".base_layer.", ".")


def _kind(module: nn.Module, p_name: str, full: str) -> str:
    if ".lora_B" in full:
        return "zeros"
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return "ones" if p_name == "weight" else "zeros"
    if p_name == "modulation":
        return "modulation"
    if isinstance(module, (nn.Linear, nn.Conv3d)):
        return "uniform"
    raise ValueError(f"no initialisation rule for {full} ({type(module).__name__}.{p_name})")


def _fan_in(module: nn.Module) -> int:
    w = getattr(module, "weight", None)
    if isinstance(module, (nn.Linear, nn.Conv3d)) and w is not None:
        return int(math.prod(w.shape[1:]))
    return 0


# ------------------------------------------------------------------------------------------ diffusers folders


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
MAX_HEADER_BYTES = 100 << 20


class SafetensorsRows:
    """Rows of the tensors of one safetensors file, read with positioned reads.

    A slice along dim 0 of a row-major tensor is one contiguous byte range, so a rank reads exactly its
    rows and nothing else. No memory map: mapped pages would count as the process's memory for as long
    as the file stays open."""

    def __init__(self, path: Path):
        import json
        import struct

        from dataload.files import open_regular

        self.path = path
        self._f = open_regular(path, "weights file")
        head = self._f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (truncated header)")
        (n,) = struct.unpack("<Q", head)
        size = os.fstat(self._f.fileno()).st_size
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(self._f.read(n))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"{path}: not a safetensors file (header is not JSON)") from None
        self._base = 8 + n
        self.tensors: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            try:
                dtype = _ST_DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                start, end = (int(v) for v in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: tensor {key!r} has a bad header entry") from None
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if end - start != nbytes or start < 0 or self._base + end > size:
                raise ValueError(f"{path}: tensor {key!r} does not fit its header or the file")
            self.tensors[key] = (dtype, shape, start, end)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.tensors[key][1]

    def read(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        dtype, shape, start, _ = self.tensors[key]
        if not shape:
            rows = self._pread(start, torch.empty((), dtype=dtype).element_size())
            return torch.frombuffer(rows, dtype=dtype).reshape(())
        a, b = (index[0].start, index[0].stop) if index else (0, shape[0])
        row_bytes = math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()
        data = self._pread(start + a * row_bytes, (b - a) * row_bytes)
        t = torch.frombuffer(data, dtype=dtype).reshape(b - a, *shape[1:]) if b > a else \
            torch.empty((0, *shape[1:]), dtype=dtype)
        return t[(slice(None), *index[1:])].clone() if len(index) > 1 else t

    def _pread(self, offset: int, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = os.preadv(self._f.fileno(), [view[got:]], self._base + offset + got)
            if k <= 0:
                raise ValueError(f"{self.path}: truncated tensor data")
            got += k
        return buf

    def close(self) -> None:
        self._f.close()


class DiffusersWeights:
    """A diffusers Wan transformer folder read lazily: `read(our_name, index)` loads only that slice."""

    def __init__(self, folder: str | os.PathLike, num_layers: int, cross_attn_norm: bool = True):
        folder = Path(folder)
        if (folder / "transformer").is_dir():
            folder = folder / "transformer"
        self.folder = folder
        self.config = read_diffusers_config(str(folder))
        files = sorted(p for p in folder.iterdir() if p.name.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"{folder}: no .safetensors weights")
        self._files: list[SafetensorsRows] = []
        self._where: dict[str, int] = {}
        for f in files:
            self._files.append(SafetensorsRows(f))
            for key in self._files[-1].tensors:
                self._where[key] = len(self._files) - 1
        self._map: dict[str, str] = dict(_TOP)
        for i in range(num_layers):
            p = f"blocks.{i}."
            for ours, theirs in _BLOCK.items():
                if ours.startswith("cross_norm.") and not cross_attn_norm:
                    continue
                self._map[p + ours] = p + theirs
        missing = sorted(set(self._map.values()) - set(self._where))
        if missing:
            raise KeyError(f"{folder}: the weights lack {len(missing)} tensor(s), e.g. {missing[:3]}")

    def names(self) -> set[str]:
        return set(self._map)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()
        self._where.clear()

    def _file(self, key: str) -> SafetensorsRows:
        return self._files[self._where[key]]

    def read(self, name: str, index: tuple[slice, ...]) -> torch.Tensor:
        if name not in self._map:
            raise KeyError(f"{self.folder} has no weights for {name}")
        key = self._map[name]
        return self._file(key).read(key, index)
