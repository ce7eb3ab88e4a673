"""The sharded loader on real H.264 clips in real shards: partition, order, resume, buckets, packing,
blending and tolerance of corrupt data."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import av
import numpy as np
import pytest
import torch

from dataload.loader import LoaderConfig, LoaderWarning, VideoLoader, build_loader
from dataload.loader.config import Bucket
from dataload.loader.decode import choose_frames, decode_clip
from dataload.shards import ShardWriter
from tests.dataload.test_loader_helpers import clips, write_curated  # noqa: F401  (fixture)


def _cfg(**kw) -> LoaderConfig:
    base = dict(batch_size=2, num_frames=8, fps=8.0, buckets=[(32, 32), (32, 48)], shuffle_buffer=8)
    base.update(kw)
    return LoaderConfig(**base)


def _keys(batch) -> list[str]:
    return [m["clip_id"] for m in batch["meta"]]


def _plan_keys(loader: VideoLoader) -> list[list[str]]:
    tab = loader._table
    return [[tab.info(g)[2].key for g in pb.real_gids()] for pb in loader.plan()]


@pytest.fixture(scope="module")
def even(clips, tmp_path_factory):  # noqa: F811
    """24 samples in 5 shards (5,5,5,5,4): every kind fits the 32x32 bucket."""
    out = tmp_path_factory.mktemp("even")
    keys = write_curated(out, clips, 24, 5)
    return str(out), keys


@pytest.fixture(scope="module")
def odd(clips, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("odd")
    keys = write_curated(out, clips, 25, 4)
    return str(out), keys


def _run(path, cfg, rank, world):
    """(the plan's keys, the batches of one full pass)."""
    loader = build_loader([path], cfg, rank=rank, world_size=world)
    plan = _plan_keys(loader)
    return plan, list(loader)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_partition_every_sample_once_when_divisible(even, world):
    path, keys = even
    seen = []
    counts = set()
    for rank in range(world):
        # 0-2 workers on the first and last rank: the worker count never changes a rank's batches
        for nw in ([0, 1, 2] if rank in (0, world - 1) else [0]):
            plan, batches = _run(path, _cfg(buckets=[(32, 32)], num_workers=nw), rank, world)
            got = [_keys(b) for b in batches]
            assert got == plan, (rank, nw)
            for b in batches:
                assert tuple(b["video"].shape) == (2, 8, 3, 32, 32) and b["video"].dtype == torch.uint8
            if nw == 0:
                seen += [k for b in got for k in b]
                counts.add(len(batches))
    assert len(counts) == 1  # every rank the same number of batches
    assert sorted(seen) == sorted(keys)


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_partition_remainder_rule(odd, remainder):
    path, keys = odd
    world = 2
    real, counts = [], []
    for rank in range(world):
        _, batches = _run(path, _cfg(buckets=[(32, 32)], remainder=remainder), rank, world)
        counts.append(len(batches))
        for b in batches:
            assert len(b["meta"]) == 2  # pad keeps the batch shape
            if not b["padding"]:
                real += [k for k, m in zip(_keys(b), b["pad_mask"].tolist()) if m]
    assert counts[0] == counts[1]
    assert len(real) == len(set(real))  # never twice
    if remainder == "drop":
        # 25 samples -> slices of 12 and 13; rank 1's odd sample does not fill a batch and is dropped.
        assert len(real) == 24
    else:
        assert sorted(real) == sorted(keys)


def test_same_seed_same_order_and_epochs_differ(even):
    path, _ = even
    a = build_loader([path], _cfg())
    b = build_loader([path], _cfg())
    c = build_loader([path], _cfg(seed=1))
    assert _plan_keys(a) == _plan_keys(b)
    assert _plan_keys(a) != _plan_keys(c)
    first = [_keys(x) for x in a]  # a full pass moves to epoch 1
    assert a.epoch == 1 and first == _plan_keys(b)
    assert _plan_keys(a) != first
    b.set_epoch(1)
    assert _plan_keys(a) == _plan_keys(b)


def test_buckets_one_shape_per_batch_and_captions_align(even):
    path, _ = even
    loader = build_loader([path], _cfg(dtype="float32", start="center"))
    shapes = set()
    for b in loader:
        v = b["video"]
        assert v.dtype == torch.float32 and -1.0 <= v.min() and v.max() <= 1.0
        shapes.add(tuple(v.shape))
        for m, cap in zip(b["meta"], b["caption"]):
            kind = m["source"].split(".")[0]
            assert cap.startswith(f"a {kind} clip")
            want = (32, 48) if kind == "land" else (32, 32)  # 4:3 -> nearest aspect 3:2; 3:4 and 1:1 -> 1:1
            assert tuple(v.shape[-2:]) == want
    assert shapes == {(2, 8, 3, 32, 32), (2, 8, 3, 32, 48)}


def test_duration_buckets_and_too_short(clips, tmp_path):  # noqa: F811
    path = tmp_path / "d"
    write_curated(path, clips, 8, 8, kinds=("land", "square", "short"))
    with pytest.warns(LoaderWarning, match="too short"):
        loader = build_loader([str(path)], _cfg(buckets=[(16, 32, 32), (8, 32, 32)], batch_size=1))
    frames = Counter()
    for b in loader:
        kind = b["meta"][0]["source"].split(".")[0]
        frames[(kind, b["video"].shape[1])] += 1
    # land: 1.9 s fits 16 frames at 8 fps; square: 23 frames at 12 fps fits 16 too; short never fits.
    assert set(frames) == {("land", 16), ("square", 16)}
    assert sum(1 for n, r in loader.skipped if "too short" in r) == 2


def _take(loader, k):
    out = []
    for b in loader:
        out.append(b)
        if len(out) == k:
            break
    return out


@pytest.mark.parametrize("workers_before,workers_after", [(2, 2), (2, 0), (0, 1)])
def test_exact_resume_after_k_batches(even, workers_before, workers_after):
    path, _ = even
    full = list(build_loader([path], _cfg(num_workers=0)))
    first = build_loader([path], _cfg(num_workers=workers_before))
    head = _take(first, 5)
    state = json.loads(json.dumps(first.state_dict()))  # the state is plain JSON
    second = build_loader([path], _cfg(num_workers=workers_after))
    second.load_state_dict(state)
    tail = list(second)
    got = head + tail
    assert [_keys(b) for b in got] == [_keys(b) for b in full]
    for a, b in zip(got, full):
        assert torch.equal(a["video"], b["video"])
    assert second.epoch == 1


@pytest.mark.parametrize("before,after", [(2, 3), (4, 1), (3, 2)])
def test_resume_with_other_world_size_neither_repeats_nor_skips(even, before, after):
    path, keys = even
    cfg = _cfg(buckets=[(32, 32)])
    seen = []
    states = []
    for r in range(before):
        loader = build_loader([path], cfg, rank=r, world_size=before)
        seen += [k for b in _take(loader, 1) for k in _keys(b)]
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)  # any rank's state resumes all
    counts = set()
    for r in range(after):
        loader = build_loader([path], cfg, rank=r, world_size=after)
        loader.load_state_dict(states[0])
        got = [_plan_keys(loader)]
        counts.add(len(got[0]))
        seen += [k for b in got[0] for k in b]
    assert len(counts) == 1
    assert len(seen) == len(set(seen))  # nothing repeated
    # Nothing skipped except the documented remainder: at most one incomplete batch per new rank.
    assert len(set(keys) - set(seen)) < after * cfg.batch_size


def test_resume_refuses_other_config(even):
    path, _ = even
    a = build_loader([path], _cfg())
    b = build_loader([path], _cfg(batch_size=3))
    with pytest.raises(ValueError, match="another data set or loader config"):
        b.load_state_dict(a.state_dict())


def test_packing_keeps_every_sample_and_cu_seqlens(even):
    path, keys = even
    cfg = _cfg(pack_tokens=1000, patch=(1, 4, 4), pack_window=7, num_workers=1)
    loader = build_loader([path], cfg)
    seen = []
    for b in loader:
        lens = [cfg.tokens((v.shape[0], v.shape[2], v.shape[3])) for v in b["video"]]
        assert b["seq_lens"] == lens
        assert b["cu_seqlens"].tolist() == np.concatenate([[0], np.cumsum(lens)]).tolist()
        assert b["num_tokens"] == sum(lens) <= 1000
        assert int(b["loss_mask"].sum()) == b["num_tokens"] and b["loss_mask"].shape == (1000,)
        seen += _keys(b)
    assert sorted(seen) == sorted(keys)  # the window that is cut short by the end of data is packed too
    # 8x32x32 -> 512 tokens and 8x32x48 -> 768: first-fit-decreasing puts at most one big one per pack.
    assert len(loader.plan()) >= 12


def test_packing_oversize_is_skipped_with_warning(even):
    path, _ = even
    with pytest.warns(LoaderWarning, match="pack_tokens"):
        loader = build_loader([path], _cfg(pack_tokens=600, patch=(1, 4, 4)))
    assert all(len(pb.gids) == 1 for pb in loader.plan())  # 512 each; the 768-token clips cannot fit


def test_blending_ratio_and_determinism(clips, tmp_path):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    ka = write_curated(a, clips, 300, 100, kinds=("square",), tag="a")
    write_curated(b, clips, 300, 100, kinds=("square",), tag="b")
    cfg = _cfg(batch_size=4, buckets=[(32, 32)])
    ld = build_loader([(str(a), 3.0), (str(b), 1.0)], cfg)
    keys = [k for batch in _plan_keys(ld) for k in batch]
    frac_a = sum(k.startswith("a") for k in keys) / len(keys)
    assert abs(frac_a - 0.75) < 0.05, frac_a
    assert len(set(keys)) == len(keys)
    assert len([k for k in keys if k.startswith("a")]) <= len(ka)
    again = build_loader([(str(a), 3.0), (str(b), 1.0)], cfg)
    assert _plan_keys(again) == _plan_keys(ld)
    other = build_loader([(str(a), 3.0), (str(b), 1.0)], _cfg(batch_size=4, buckets=[(32, 32)], seed=5))
    assert _plan_keys(other) != _plan_keys(ld)


def test_corrupt_samples_and_truncated_shard_are_skipped(clips, tmp_path):  # noqa: F811
    out = tmp_path / "bad"
    write_curated(out, clips, 6, 3, tag="g")  # two good shards
    data, meta = clips["square"]
    with ShardWriter(out / "shards", start_index=2, max_samples_per_shard=10) as w:
        w.write("badjson", {"mp4": data, "json": b"{not json"})
        w.write("nomp4", {"json": json.dumps(dict(meta, clip_id="nomp4", source="x")).encode()})
        w.write("garbage", {"mp4": b"\x00garbage" * 50, "json": json.dumps(dict(meta, clip_id="garbage",
                                                                                 source="x")).encode()})
        w.write("ok1", {"mp4": data, "json": json.dumps(dict(meta, clip_id="ok1", source="square.mp4")).encode()})
    with ShardWriter(out / "shards", start_index=3, max_samples_per_shard=10) as w:
        for i in range(4):
            w.write(f"t{i}", {"mp4": data, "json": json.dumps(dict(meta, clip_id=f"t{i}", source="square.mp4"))
                              .encode()})
    trunc = out / "shards" / "shard-000003.tar"
    raw = trunc.read_bytes()
    trunc.write_bytes(raw[: len(raw) // 2])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        loader = build_loader([str(out)], _cfg(batch_size=1, buckets=[(32, 32)]))
        batches = list(loader)
    text = "\n".join(str(w.message) for w in rec if issubclass(w.category, LoaderWarning))
    assert "badjson" in text and "nomp4" in text and "shard-000003.tar" in text and "garbage" in text
    got = [k for b in batches for k in _keys(b)]
    assert {f"g{i:04d}" for i in range(6)} | {"ok1"} <= set(got)
    assert "garbage" not in got and "badjson" not in got
    assert any(k.startswith("t") for k in got)  # the whole samples before the cut are kept
    names = [n for n, _ in loader.skipped]
    assert sum("garbage" in n for n in names) == 1 and any("rest of shard" in r for _, r in loader.skipped)


def test_choose_frames_nearest_timestamp():
    # variable frame rate: times 0, .1, .15, .4, .5 (pts in ms)
    pts = [0, 100, 150, 400, 500]
    assert choose_frames(pts, 0.001, 3, 5.0, 0.0) == [0, 2, 3]  # targets 0, .2, .4: .2 is nearest .15
    assert choose_frames(pts, 0.001, 2, 10.0, 1.0) == [3, 4]  # window .4-.5 at the end
    assert choose_frames(pts, 0.001, 3, None, 0.5) == [1, 2, 3]


def test_decode_matches_plain_pyav(clips):  # noqa: F811
    data, meta = clips["land"]
    import io

    with av.open(io.BytesIO(data)) as c:
        ref = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    got = decode_clip(data, Bucket(4, meta["height"], meta["width"]), None, 0.0)
    assert got.shape == (4, 3, 48, 64)
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), np.stack(ref[:4]))
    # fps 5 on a 10 fps clip takes every other frame
    got = decode_clip(data, Bucket(3, meta["height"], meta["width"]), 5.0, 0.0)
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), np.stack([ref[0], ref[2], ref[4]]))


def test_fsspec_urls_and_shards_folder(even):
    path, keys = even
    cfg = _cfg(buckets=[(32, 32)])
    want = _plan_keys(build_loader([path], cfg))
    for src in (f"file://{path}", f"{path}/shards", f"file://{path}/shards"):
        loader = build_loader([src], cfg)
        assert loader.kind == "curated"
        assert _plan_keys(loader) == want
    got = [_keys(b) for b in build_loader([f"file://{path}"], cfg)]
    assert got == want


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        build_loader([str(tmp_path / "missing")], _cfg())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no shards"):
        build_loader([str(tmp_path / "empty")], _cfg())
    with pytest.raises(ValueError, match="bucket"):
        LoaderConfig(buckets=[(1, 2, 3, 4)])


@pytest.mark.parametrize("world", [2, 3, 4])
def test_equal_batch_counts_with_buckets_and_blending(clips, tmp_path_factory, world):  # noqa: F811
    """Ranks whose slices fill the buckets unevenly still get the same number of batches."""
    root = tmp_path_factory.mktemp("mix")
    write_curated(root / "a", clips, 37, 5, tag="a")
    write_curated(root / "b", clips, 23, 4, kinds=("land",), tag="b")
    cfg = _cfg(batch_size=3)
    plans = [_plan_keys(build_loader([(str(root / "a"), 2.0), (str(root / "b"), 1.0)], cfg, rank=r,
                                     world_size=world)) for r in range(world)]
    assert len({len(p) for p in plans}) == 1 and len(plans[0]) > 0
    flat = [k for p in plans for b in p for k in b]
    assert len(flat) == len(set(flat))


@pytest.mark.real_videos
def test_real_videos_through_shards_match_the_reader(real_videos_dir, tmp_path):
    """Real files as shard members: pixel aspect (carphone), rotation + VFR (fire2), the best of several
    streams (nasa), VP9 (no_duration.webm) decode like dataload.reader.VideoReader at display geometry;
    the corrupt file decodes tolerantly."""
    from dataload.probe import probe
    from dataload.reader import VideoReader

    names = ["carphone_pristine.mp4", "fire2.mp4", "nasa_13013.mp4", "no_duration.webm", "corrupted.mp4"]
    out = tmp_path / "real"
    (out / "shards").mkdir(parents=True)
    (out / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    with ShardWriter(out / "shards") as w:
        for i, name in enumerate(names):
            p = real_videos_dir / name
            info = probe(p)
            meta = {"clip_id": f"r{i}", "source": name, "start_s": 0.0, "end_s": info.duration_s,
                    "start_frame": 0, "end_frame": info.num_frames, "num_frames": info.num_frames,
                    "fps": info.fps, "width": info.width, "height": info.height}
            w.write(f"r{i}", {"mp4": p.read_bytes(), "json": json.dumps(meta).encode()})
            if name == "corrupted.mp4":
                continue
            got = decode_clip(p.read_bytes(), Bucket(3, info.height, info.width), None, 0.0)
            ref = VideoReader(p, backend="pyav").read(indices=[0, 1, 2])  # display geometry
            assert got.shape == (3, 3, info.height, info.width), name
            diff = (got.permute(0, 2, 3, 1).float() - ref.float()).abs().mean()
            assert diff < 2.0, (name, float(diff))
    loader = build_loader([str(out)], _cfg(batch_size=1, buckets=[(32, 48), (48, 32)], fps=10.0))
    seen = [m["source"] for b in loader for m in b["meta"]]
    assert sorted(seen) == sorted(names) and not loader.skipped
