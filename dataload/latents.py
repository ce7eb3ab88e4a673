"""The latent cache: shards of precomputed VAE latents and text embeddings (DESIGN.md section 2).

LATENTS/dataset.json           {"kind": "latent", "num_samples", "sources", "config", ...}
LATENTS/shards/latent-SSS-NNNNNN.tar   per clip: <clip_id>.latents.safetensors (latents, text, text_mask)
                                        and <clip_id>.json (the clip's JSON plus latent_shape, text_length)
LATENTS/_state/precompute.json the fingerprint of the run and the input shards already done

`precompute` maps each input shard to one output shard, written atomically, and records it as done, so a
rerun after a crash skips finished shards and produces the same bytes as an uninterrupted run.

Inputs are read like the loader reads them: input shards that are not regular files are skipped with
their reason, a refused or undecodable clip is skipped with its reason (`PrecomputeResult.skipped`), and
so is a clip whose encoded latents or text hold NaN/inf. The state file is read only when it is a regular
file of at most 16 MiB; one that is not, or does not hold a precompute state, stops with one clear line
(ValueError) rather than being guessed at. A shard recorded as done whose output is missing or not a
regular file is encoded again.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from av.video.reformatter import VideoReformatter
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from dataload.clip_record import check_clip_facts
from dataload.errors import ShardError, VideoError
from dataload.files import atomic_write_bytes, atomic_write_text, describe_os_error, read_regular
from dataload.loader.config import LoaderConfig
from dataload.loader.decode import decode_clip
from dataload.loader.plan import assign_bucket
from dataload.loader.sources import LATENT_MEMBER, LATENT_TENSORS, resolve_source
from dataload.shards import ShardWriter, read_shard
from dataload.strict_json import loads_strict, parse_json_member

MAX_STATE_BYTES = 16 << 20

EncodeFn = Callable[[torch.Tensor, list[str]], Mapping[str, torch.Tensor]]


def encode_latent_member(latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> bytes:
    tensors = {"latents": latents, "text": text, "text_mask": text_mask.to(torch.bool)}
    return _st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def decode_latent_member(data: bytes) -> dict[str, torch.Tensor]:
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own error types on bad bytes
        raise ShardError(f"latents.safetensors is unreadable: {e}") from None
    missing = [k for k in LATENT_TENSORS if k not in tensors]
    if missing:
        raise ShardError(f"latents.safetensors misses tensor(s) {', '.join(missing)}")
    return tensors


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _load_state(state_path: Path) -> dict[str, Any] | None:
    """The precompute state, or None when there is none; ValueError (one line) when it is unusable."""
    if not os.path.lexists(state_path):
        return None
    hint = "remove it to start over, or use a new --out"
    try:
        raw = read_regular(state_path, "precompute state", MAX_STATE_BYTES)
    except OSError as e:
        raise ValueError(f"{describe_os_error(e, 'cannot read')}; {hint}") from None
    try:
        state = loads_strict(raw)
    except (ValueError, RecursionError):
        raise ValueError(f"{state_path}: precompute state is not valid JSON; {hint}") from None
    done = state.get("done") if isinstance(state, dict) else None
    if (not isinstance(done, dict) or "fingerprint" not in state
            or not all(isinstance(k, str) and isinstance(v, dict) and type(v.get("samples")) is int
                       and v["samples"] >= 0 for k, v in done.items())):
        raise ValueError(f"{state_path}: not a precompute state (no fingerprint or done shards); {hint}")
    return state


@dataclass
class PrecomputeResult:
    out: Path
    shards_done: int = 0  # in this call
    shards_skipped: int = 0  # already done by an earlier call
    samples: int = 0  # written in this call
    skipped: list[tuple[str, str]] = field(default_factory=list)


def precompute(sources: list[str], encode_fn: EncodeFn, out: str | os.PathLike, *,
               config: LoaderConfig | None = None, progress: bool = False) -> PrecomputeResult:
    """Run `encode_fn(video (B,T,C,H,W), captions) -> {"latents": (B,...), "text": (B,L,D),
    "text_mask": (B,L)}` over every clip of the curated `sources`; resumable, atomic per shard.

    Clips are decoded as the loader would (the config's buckets, fps and dtype; the window centred so the
    cache is deterministic) and batched by bucket, `config.batch_size` at a time.
    """
    cfg = config if config is not None else LoaderConfig(batch_size=4, dtype="float32", start="center")
    out = Path(out)
    inputs = []
    refused: list[tuple[str, str]] = []
    for s, path in enumerate(sources):
        kind, shards = resolve_source(path, refused)
        if kind != "curated":
            raise ValueError(f"precompute needs curated shards, {path} holds {kind} data")
        inputs += [(s, j, shard) for j, shard in enumerate(shards)]
    fingerprint = {"sources": [os.fspath(p) for p in sources], "shards": [os.path.basename(x) for *_, x in inputs],
                   "config": cfg.fingerprint(), "dtype": cfg.dtype}
    state_path = out / "_state" / "precompute.json"
    done: dict[str, dict[str, Any]] = {}
    state = _load_state(state_path)
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"{out} holds latents of other sources or another config; use a new --out")
        done = state["done"]
    (out / "shards").mkdir(parents=True, exist_ok=True)
    result = PrecomputeResult(out, skipped=list(refused))
    buckets = cfg.bucket_list()
    bar = _progress(len(inputs), progress)
    for s, j, shard in inputs:
        name = f"latent-{s:03d}-{j:06d}.tar"
        if name in done and not (out / "shards" / name).is_file():
            del done[name]  # recorded as done but gone (or replaced by something that is not a file): redo
        if name in done:
            result.shards_skipped += 1
            bar(1)
            continue
        n, skipped = _encode_shard(shard, out / "shards", s, j, encode_fn, cfg, buckets)
        result.shards_done += 1
        result.samples += n
        result.skipped += skipped
        done[name] = {"input": shard, "samples": n, "skipped": [list(x) for x in skipped]}
        _atomic_write_text(state_path, json.dumps({"fingerprint": fingerprint, "done": done}, indent=1))
        bar(1)
    if result.skipped:
        names = "; ".join(f"{a} ({b})" for a, b in result.skipped[:5])
        warnings.warn(f"precompute skipped {len(result.skipped)} sample(s): {names}", stacklevel=2)
    total = sum(d["samples"] for d in done.values())
    _atomic_write_text(out / "dataset.json", json.dumps({
        "kind": "latent", "num_samples": total, "num_shards": len(done),
        "sources": [os.fspath(p) for p in sources], "config": cfg.fingerprint()}, indent=1))
    return result


def _progress(total: int, enabled: bool) -> Callable[[int], None]:
    if not enabled:
        return lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="precompute", unit="shard", disable=None)  # quiet when not a terminal
    return bar.update


def _encode_shard(shard: str, folder: Path, s: int, j: int, encode_fn: EncodeFn, cfg: LoaderConfig,
                  buckets) -> tuple[int, list[tuple[str, str]]]:
    skipped: list[tuple[str, str]] = []
    order: list[str] = []  # keys in input order
    encoded: dict[str, tuple[bytes, dict[str, Any]]] = {}
    # Decoded clips wait per bucket only until a batch is full: memory holds one batch per bucket, not
    # the shard (a shard of 480p clips would not fit).
    pending: dict[int, list[tuple[str, dict[str, Any], str, torch.Tensor]]] = {}
    sws = VideoReformatter()

    def encode(chunk) -> None:
        res = encode_fn(torch.stack([v for *_, v in chunk]), [c for _, _, c, _ in chunk])
        missing = [t for t in LATENT_TENSORS if t not in res]
        if missing:
            raise ValueError(f"encode_fn returned no {', '.join(missing)}")
        for i, (key, meta, caption, _) in enumerate(chunk):
            lat, text, mask = res["latents"][i], res["text"][i], res["text_mask"][i]
            if not (bool(torch.isfinite(lat).all()) and bool(torch.isfinite(text).all())):
                skipped.append((f"{shard}:{key}", "the encoder gave non-finite latents or text"))
                continue
            info = dict(meta, latent_shape=list(lat.shape), text_length=int(mask.sum()), caption=caption)
            encoded[key] = (encode_latent_member(lat, text, mask), info)

    try:
        for sample in read_shard(shard, skipped=skipped, max_member_bytes=cfg.max_member_bytes,
                                 max_small_member_bytes=cfg.max_small_member_bytes):
            key = sample["__key__"]
            try:
                if "mp4" not in sample or "json" not in sample:
                    raise ShardError(f"misses member(s) {', '.join(m for m in ('mp4', 'json') if m not in sample)}")
                meta = parse_json_member(sample["json"], f"{shard}:{key}")
                facts = check_clip_facts(meta)
                if facts["width"] * facts["height"] > cfg.max_frame_pixels:
                    raise VideoError(f"clip is {facts['width']}x{facts['height']}, over max_frame_pixels")
                b = assign_bucket(buckets, facts["width"], facts["height"], facts["num_frames"], facts["fps"],
                                  cfg.fps)
                if b is None:
                    raise VideoError("too short for every bucket")
                v = decode_clip(sample["mp4"], buckets[b], cfg.fps, 0.5, threads=cfg.decode_threads,
                                reformatter=sws, max_pixels=cfg.max_frame_pixels)
            except (ShardError, VideoError) as e:
                skipped.append((f"{shard}:{key}", str(e)))
                continue
            v = v.float().div_(127.5).sub_(1.0) if cfg.dtype == "float32" else v
            caption = sample["txt"].decode("utf-8", "replace") if "txt" in sample else meta.get("caption")
            caption = caption.encode("utf-8", "replace").decode("utf-8") if isinstance(caption, str) else ""
            order.append(key)
            q = pending.setdefault(b, [])
            q.append((key, meta, caption, v))
            if len(q) == cfg.batch_size:
                encode(q)
                q.clear()
    except ShardError as e:
        skipped.append((shard, f"rest of shard skipped: {e}"))
    for b in sorted(pending):
        if pending[b]:
            encode(pending[b])
    items = [k for k in order if k in encoded]
    if items:
        with ShardWriter(folder, max_samples_per_shard=len(items), prefix=f"latent-{s:03d}-", start_index=j) as w:
            for key in items:  # input order, so reruns give identical bytes
                data, info = encoded[key]
                w.write(key, {LATENT_MEMBER: data, "json": json.dumps(info, sort_keys=True).encode(),
                              "txt": info["caption"].encode()})
    else:  # an empty tar keeps the input -> output mapping one to one
        _write_empty_tar(folder / f"latent-{s:03d}-{j:06d}.tar")
    return len(items), skipped


def _write_empty_tar(path: Path) -> None:
    atomic_write_bytes(path, b"\0" * 10240)  # the end-of-archive marker, padded to a tar record
