"""Hostile latent samples: a safetensors header with bad shapes, dtypes, offsets or lengths is skipped at
indexing; latents or text holding NaN/inf are skipped when loaded (they never reach training); a pickle in
place of the safetensors member is never deserialised."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from dataload.latents import encode_latent_member
from dataload.shards import ShardWriter
from tests.reliability.conftest import Canary
from tests.reliability.test_loader_common import cfg, run_loader

LAT = (4, 2, 4, 4)  # (C, T, H, W)
TEXT = (5, 8)  # (L, D)


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.randn(LAT, generator=g), "text": torch.randn(TEXT, generator=g),
            "text_mask": torch.ones(TEXT[0], dtype=torch.bool)}


def _member(t: dict[str, torch.Tensor]) -> bytes:
    return encode_latent_member(t["latents"], t["text"], t["text_mask"])


def _st(header: dict | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _header_edit(edit) -> bytes:
    """A valid member whose header JSON is rewritten by edit(header) (the data stays as it was)."""
    good = _member(_tensors(99))
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + n])
    edit(header)
    return _st(header, good[8 + n:])


def _write_latent(root: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"kind": "latent"}))
    with ShardWriter(root / "shards", max_samples_per_shard=len(samples) + 1) as w:
        for key, members in samples:
            w.write(key, {"json": json.dumps({"clip_id": key}).encode(), **members})
    return root


def _nonfinite(name: str, value: float):
    t = _tensors(7)
    t[name] = t[name].clone()
    t[name].view(-1)[3] = value
    return _member(t)


def _set(path: list, value):
    def edit(h):
        node = h
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


BAD_HEADERS = {
    "latents-nan": (lambda: _nonfinite("latents", float("nan")), "load", "non-finite"),
    "latents-neg-inf": (lambda: _nonfinite("latents", float("-inf")), "load", "non-finite"),
    "text-inf": (lambda: _nonfinite("text", float("inf")), "load", "non-finite"),
    "latents-int-dtype": (lambda: _header_edit(_set(["latents", "dtype"], "I32")), "index", "dtype"),
    "unknown-dtype": (lambda: _header_edit(_set(["text", "dtype"], "Q9")), "index", "dtype"),
    "latents-3d": (lambda: _header_edit(_set(["latents", "shape"], [4, 2, 16])), "index", "dimensions"),
    "shape-negative": (lambda: _header_edit(_set(["latents", "shape"], [4, -2, 4, 4])), "index", "shape"),
    "shape-strings": (lambda: _header_edit(_set(["text", "shape"], ["5", "8"])), "index", "shape"),
    "offsets-past-data": (lambda: _header_edit(_set(["latents", "data_offsets"], [0, 10**12])), "index", "offsets"),
    "mask-length-mismatch": (lambda: _header_edit(_set(["text_mask", "shape"], [4])), "index", "mask"),
    "missing-text-mask": (lambda: _header_edit(lambda h: h.pop("text_mask")), "index", "text_mask"),
    "header-length-huge": (lambda: struct.pack("<Q", 2**60) + b"{}" * 8, "index", "header length"),
    "header-nan": (lambda: _st(b'{"latents": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', b"\0" * 4),
                   "index", "JSON"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_latent_sample_is_skipped(tmp_path, case):
    make, when, reason = BAD_HEADERS[case]
    root = _write_latent(tmp_path, [("good1", {"latents.safetensors": _member(_tensors(1))}),
                                    ("bad", {"latents.safetensors": make()}),
                                    ("good2", {"latents.safetensors": _member(_tensors(2))})])
    run = run_loader([root], cfg())
    assert run.keys == ["good1", "good2"]
    for b in run.batches:
        if b["num_samples"]:
            assert torch.isfinite(b["latents"]).all() and torch.isfinite(b["text"]).all()
    # non-finite values are found when the sample is loaded: its batch is yielded empty
    assert [b["num_samples"] for b in run.batches] == ([1, 0, 1] if when == "load" else [1, 1])
    ((name, why),) = run.loader.skipped
    assert name.endswith(":bad") and reason.lower() in why.lower(), why
    assert ":bad (" in run.text


def test_other_text_width_is_left_out_not_crashing_the_batch(tmp_path):
    """Text of another width (L, D') cannot share a padded batch: left out by the plan, named."""
    odd = _tensors(5)
    odd["text"] = torch.randn(TEXT[0], TEXT[1] * 2)
    root = _write_latent(tmp_path, [(f"k{i}", {"latents.safetensors": _member(_tensors(i))}) for i in range(3)]
                         + [("wide", {"latents.safetensors": _member(odd)})])
    run = run_loader([root], cfg(batch_size=2, remainder="pad"))
    assert run.keys == ["k0", "k1", "k2", "k2"] and run.batches[1]["pad_mask"].tolist() == [True, False]
    assert run.batches[0]["text"].shape == (2, TEXT[0], TEXT[1])
    assert any(n.endswith(":wide") and "text width" in r for n, r in run.loader.skipped)


def test_pickle_in_place_of_the_latents_is_never_loaded(tmp_path, canary: Canary):
    """A sample whose tensors come as .pth/.pickle (a pickle that would run code) is skipped unread."""
    root = _write_latent(tmp_path, [("good", {"latents.safetensors": _member(_tensors(1))}),
                                    ("evil", {"latents.pth": canary.payload(), "pickle": canary.payload()}),
                                    ("evil2", {"latents.safetensors": canary.payload()})])
    run = run_loader([root], cfg())
    assert run.keys == ["good"]
    names = run.skipped_names
    assert ":evil\n" in names + "\n" and ":evil2" in names
    canary.check()
