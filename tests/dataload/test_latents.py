"""Latent cache: precompute over real curated shards (resumable, deterministic) and the latent loader."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from dataload.latents import decode_latent_member, encode_latent_member, precompute
from dataload.loader import LoaderConfig, build_loader
from dataload.loader.sources import resolve_source
from dataload.shards import read_shard
from tests.dataload.test_loader_helpers import clips, write_curated  # noqa: F401  (fixture)

CFG = LoaderConfig(batch_size=3, num_frames=4, fps=8.0, buckets=[(32, 32), (32, 48)], dtype="float32",
                   start="center")


class Encoder:
    """A real (if tiny) encoder: 4x spatial average pooling as the 'VAE', caption bytes as the 'text'."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, video: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        b, t, c, h, w = video.shape
        lat = F.avg_pool2d(video.reshape(b * t, c, h, w), 4).reshape(b, t, c, h // 4, w // 4).transpose(1, 2)
        L = max(len(x) for x in captions)
        text = torch.zeros(b, L, 2)
        mask = torch.zeros(b, L, dtype=torch.bool)
        for i, cap in enumerate(captions):
            codes = torch.tensor(list(cap.encode()), dtype=torch.float32)
            text[i, : len(codes), 0] = codes
            text[i, : len(codes), 1] = i
            mask[i, : len(codes)] = True
        return {"latents": lat, "text": text, "text_mask": mask}


@pytest.fixture(scope="module")
def curated(clips, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("cur")
    keys = write_curated(out, clips, 14, 4)  # 4 shards
    return str(out), keys


def test_member_roundtrip():
    lat, text, mask = torch.randn(3, 2, 4, 4), torch.randn(5, 8), torch.tensor([1, 1, 0, 0, 0])
    got = decode_latent_member(encode_latent_member(lat, text, mask))
    assert torch.equal(got["latents"], lat) and torch.equal(got["text"], text)
    assert got["text_mask"].dtype == torch.bool and got["text_mask"].tolist() == [True, True, False, False, False]


@pytest.fixture(scope="module")
def latent_dir(curated, tmp_path_factory):
    out = tmp_path_factory.mktemp("lat") / "lat"
    res = precompute([curated[0]], Encoder(), out, config=CFG)
    assert res.samples == 14 and res.shards_done == 4 and not res.skipped
    return out


def test_precompute_then_load(latent_dir):
    tmp_path = latent_dir.parent
    info = json.loads((tmp_path / "lat" / "dataset.json").read_text())
    assert info["kind"] == "latent" and info["num_samples"] == 14
    kind, shards = resolve_source(str(tmp_path / "lat"))
    assert kind == "latent" and len(shards) == 4
    # The stored latents are the encoder's output on the loader's own decode of the clip.
    sample = next(read_shard(shards[0]))
    t = decode_latent_member(sample["latents.safetensors"])
    meta = json.loads(sample["json"])
    assert list(t["latents"].shape) == meta["latent_shape"]
    assert meta["text_length"] == len(meta["caption"].encode())

    loader = build_loader([str(tmp_path / "lat")], LoaderConfig(batch_size=2, shuffle_buffer=4))
    seen = []
    for b in loader:
        lat, text, mask = b["latents"], b["text"], b["text_mask"]
        assert lat.ndim == 5 and lat.shape[:3] == (2, 3, 4) and lat.shape[-2:] in ((8, 8), (8, 12))
        assert text.shape[:2] == mask.shape and text.shape[0] == 2 and text.shape[-1] == 2
        for i, cap in enumerate(b["caption"]):
            n = len(cap.encode())
            assert int(mask[i].sum()) == n
            assert bytes(text[i, :n, 0].to(torch.uint8).tolist()).decode() == cap
        seen += [m["clip_id"] for m in b["meta"]]
    assert len(seen) == len(set(seen)) and len(seen) >= 12  # incomplete shape batches dropped (remainder)


def test_precompute_is_resumable_and_deterministic(curated, tmp_path):
    src, _ = curated
    ref = tmp_path / "ref"
    precompute([src], Encoder(), ref, config=CFG)
    out = tmp_path / "crash"
    crashing = Encoder(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        precompute([src], crashing, out, config=CFG)
    done_before = json.loads((out / "_state" / "precompute.json").read_text())["done"]
    assert 0 < len(done_before) < 4
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]  # no half-written shard
    again = Encoder()
    res = precompute([src], again, out, config=CFG)
    assert res.shards_skipped == len(done_before) and res.shards_done == 4 - len(done_before)
    for p in sorted((ref / "shards").glob("*.tar")):
        assert (out / "shards" / p.name).read_bytes() == p.read_bytes()
    with pytest.raises(ValueError, match="another config"):
        precompute([src], Encoder(), out, config=LoaderConfig(batch_size=2, num_frames=4, fps=8.0))
    with pytest.raises(ValueError, match="needs curated"):
        precompute([str(ref)], Encoder(), tmp_path / "x", config=CFG)


def test_latent_packing(latent_dir):
    cfg = LoaderConfig(pack_tokens=600, patch=(1, 2, 2), pack_window=5, shuffle_buffer=4)
    loader = build_loader([str(latent_dir)], cfg)
    seen = []
    for b in loader:
        lens = [cfg.tokens(tuple(x.shape[-3:])) for x in b["latents"]]  # (C, T, H, W) -> T*H/2*W/2
        assert set(lens) <= {4 * 4 * 4, 4 * 4 * 6}
        assert b["cu_seqlens"].tolist() == [sum(lens[:i]) for i in range(len(lens) + 1)]
        assert b["num_tokens"] <= 600 and int(b["loss_mask"].sum()) == b["num_tokens"]
        assert b["text"].shape[0] == len(lens)
        seen += [m["clip_id"] for m in b["meta"]]
    assert len(seen) == 14 == len(set(seen))


def test_corrupt_latent_sample_is_skipped(latent_dir, tmp_path):
    import shutil

    from dataload.loader import LoaderWarning
    from dataload.shards import ShardWriter

    out = tmp_path / "lat2"
    shutil.copytree(latent_dir, out)
    first = next(read_shard(sorted((out / "shards").glob("*.tar"))[0]))
    bad = bytearray(first["latents.safetensors"])
    bad[9:40] = b"x" * 31  # breaks the safetensors header JSON but keeps its length field
    good = first["latents.safetensors"]
    with ShardWriter(out / "shards", prefix="zz-") as w:
        # a broken header is caught by the index, a cut tensor payload only when the sample is read
        w.write("broken", {"latents.safetensors": good[:8] + bytes(bad[8:]),
                           "json": json.dumps({"clip_id": "broken"}).encode()})
        w.write("cut", {"latents.safetensors": good[:-16], "json": json.dumps({"clip_id": "cut"}).encode()})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        loader = build_loader([str(out)], LoaderConfig(batch_size=1, shuffle_buffer=0))
        seen = [m["clip_id"] for b in loader for m in b["meta"]]
    text = " ".join(str(r.message) for r in rec if issubclass(r.category, LoaderWarning))
    assert "broken" in text and "cut" in text
    assert "broken" not in seen and "cut" not in seen and len(seen) == 14
