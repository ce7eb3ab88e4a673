"""`vfm-train fit --set data.pack_tokens=N` on a mixed curated folder (two resolutions, two durations and
one-frame clips) blended with a folder of images curated by `vfm-curate run`, 2 ranks with context
parallelism: it trains, logs its packing, resumes exactly, and the run still generates at a size it never
trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataload.shards import ShardWriter
from dataload.synthetic import Shot, make_video

# (frames, height, width) of each clip; one-frame clips are what an image becomes
CLIPS = [(12, 16, 16), (4, 16, 24), (1, 16, 16), (12, 16, 16), (4, 16, 24), (1, 16, 16), (12, 16, 16), (4, 16, 24),
         (1, 16, 16), (12, 16, 16)]
# tiny: pixel space-to-depth 2, model patch (1, 2, 2): one token is 1 x 4 x 4 pixels; buckets give 64, 48 and
# 16 tokens, so a budget of 100 packs e.g. 64 + 16 + 16 or 48 + 48
PACK = ["--set", "data.pack_tokens=100", "--set", "data.patch=[1,4,4]",
        "--set", "data.buckets=[[4,16,16],[2,16,24],[1,16,16]]", "--set", "train.val_every=0",
        "--set", "train.checkpoint_every=2", "--set", "train.sample_every=0"]
STEPS = 4


def write_mixed(out: Path) -> Path:
    tmp = out / "_videos"
    tmp.mkdir(parents=True)
    (out / "shards").mkdir()
    with ShardWriter(out / "shards", max_samples_per_shard=3) as w:
        for i, (frames, h, wd) in enumerate(CLIPS):
            path = tmp / f"clip{i}.mp4"
            truth = make_video(path, [Shot("pan", num_frames=frames, seed=i)], width=wd, height=h, fps=8.0, seed=i)
            meta = {"clip_id": f"clip{i:03d}", "source": str(path), "start_s": 0.0,
                    "end_s": truth.frame_times[-1] + 1 / 8.0, "start_frame": 0, "end_frame": frames,
                    "num_frames": frames, "fps": 8.0, "width": wd, "height": h, "caption": f"clip number {i}"}
            w.write(meta["clip_id"], {"mp4": path.read_bytes(), "json": json.dumps(meta).encode(),
                                      "txt": meta["caption"].encode()})
    (out / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from curate.cli import main
    from tests.e2e.test_curate_images import write_images

    root = tmp_path_factory.mktemp("images")
    assert main(["run", str(write_images(root / "pictures")), "--out", str(root / "out"), "--workers", "0"]) == 0
    return root / "out"


def _fit(data: Path, out: Path, *extra: str, images: Path | None = None) -> int:
    from diffusion.cli_train import main

    blend = ["--data", f"{data}=3", "--data", f"{images}=1"] if images is not None else ["--data", str(data)]
    return main(["fit", "--config", "tiny", *blend, "--out", str(out), "--steps", str(STEPS),
                 "--nproc", "2", "--cp", "2", "--set", "parallel.cp_mode=ring", *PACK, *extra])


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


@pytest.mark.distributed
def test_packed_fit_logs_packing_resumes_exactly_and_generates(mixed, images, tmp_path):
    straight = tmp_path / "straight"
    assert _fit(mixed, straight, images=images) == 0
    records = _records(straight)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        assert r["pack_tokens"] == 100 and 0 < r["real_tokens"] <= 100
        assert r["padding_fraction"] == pytest.approx(1 - r["real_tokens"] / 100)
        assert r["samples"] >= 1
    assert max(r["samples"] for r in records) > 1, "some pack holds several samples"
    assert len({r["real_tokens"] for r in records} | {r["samples"] for r in records}) > 1

    split = tmp_path / "split"
    assert _fit(mixed, split, "--stop-after", "2", images=images) == 0
    assert _fit(mixed, split, "--resume", images=images) == 0
    assert [r["loss"] for r in _records(split)] == [r["loss"] for r in records]

    from diffusion.cli_generate import main

    video = tmp_path / "v.mp4"
    assert main(["--run", str(straight), "--out", str(video), "--prompt", "clip number 1", "--frames", "3",
                 "--height", "24", "--width", "16", "--steps", "2"]) == 0
    import av

    with av.open(str(video)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert frames.shape == (3, 24, 16, 3)


def test_pack_tokens_bad_values_are_one_line(mixed, tmp_path, capsys):
    from diffusion.cli_train import main

    base = ["fit", "--config", "tiny", "--data", str(mixed), "--out", str(tmp_path / "r")]
    cases = [(["--set", "data.pack_tokens=10", "--set", "data.patch=[1,4,4]"], "smaller than one sample"),
             (["--set", "data.pack_tokens=100"], "data.patch [1, 2, 2] must be what one DiT token covers"),
             (["--set", "data.pack_tokens=100", "--set", "data.patch=[1,4,4]", "--nproc", "2", "--cp", "2",
               "--set", "parallel.encoders=colocated"], "needs parallel.encoders=replicated")]
    for extra, needle in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert not (tmp_path / "r").exists()
