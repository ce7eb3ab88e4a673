"""The latent cache (dataload.latents.precompute) against the same classes: a corrupt or non-regular state
file is one clear ValueError (never a hang, never a guess); a FIFO among its inputs or in its output folder
blocks nothing; a bad clip or an encoder that gives NaN skips that sample with its reason."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest
import torch

from dataload.latents import precompute
from tests.reliability.test_loader_common import (  # noqa: F401  (fixture)
    bounded,
    cfg,
    clip_bytes,
    good_members,
    run_loader,
    write_samples,
)


def _encode(video: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
    lat = video[:, :, :, ::8, ::8].permute(0, 2, 1, 3, 4).float()  # (B, C, T, 4, 4)
    n = video.shape[0]
    text = torch.ones(n, 3, 8)
    for i, c in enumerate(captions):
        if "poison" in c:
            lat[i, 0, 0, 0, 0] = float("nan")
    return {"latents": lat, "text": text, "text_mask": torch.ones(n, 3, dtype=torch.bool)}


def _inputs(tmp_path: Path, clip: bytes, extra: list | None = None) -> Path:
    root = tmp_path / "in"
    write_samples(root, [("a", good_members("a", clip)), ("b", good_members("b", clip))] + (extra or []))
    return root


def _run(src: Path, out: Path, **kw):
    return bounded(lambda: precompute([str(src)], _encode, out, config=cfg(dtype="float32"), **kw),
                   what="precompute")


@contextlib.contextmanager
def _socket_at(path: Path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    try:
        os.chdir(path.parent)
        s.bind(path.name)
    finally:
        os.chdir(cwd)
    try:
        yield
    finally:
        s.close()


STATES = {
    "garbage": lambda p, stack: p.write_bytes(b"\x00\xffnot json at all"),
    "nan": lambda p, stack: p.write_text('{"fingerprint": NaN, "done": {}}'),
    "wrong-shape": lambda p, stack: p.write_text('{"fingerprint": {}, "done": {"x.tar": {"samples": "7"}}}'),
    "fifo": lambda p, stack: os.mkfifo(p),
    "socket": lambda p, stack: stack.enter_context(_socket_at(p)),
    "directory": lambda p, stack: p.mkdir(),
    "symlink-loop": lambda p, stack: os.symlink(p.name, p),
    "huge-sparse": lambda p, stack: open(p, "wb").truncate(1 << 34),
}


@pytest.mark.parametrize("case", list(STATES))
def test_unusable_state_file_is_one_clear_error(clip_bytes, tmp_path, case):  # noqa: F811
    src = _inputs(tmp_path, clip_bytes)
    out = tmp_path / "lat"
    (out / "_state").mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        STATES[case](out / "_state" / "precompute.json", stack)
        with pytest.raises(ValueError) as exc:
            _run(src, out)
    msg = str(exc.value)
    assert "\n" not in msg and "precompute.json" in msg and "--out" in msg, msg
    assert not (out / "shards").exists() or not list((out / "shards").iterdir())  # nothing written


def test_fifos_in_inputs_and_outputs_block_nothing(clip_bytes, tmp_path):  # noqa: F811
    src = _inputs(tmp_path, clip_bytes)
    os.mkfifo(src / "shards" / "shard-000005.tar")  # an input named like a shard
    out = tmp_path / "lat"
    (out / "shards").mkdir(parents=True)
    os.mkfifo(out / "shards" / "latent-000-000000.tar")  # where the first output goes
    os.mkfifo(out / "dataset.json")
    with pytest.warns(UserWarning, match="shard-000005.tar.*FIFO"):
        res = _run(src, out)
    assert res.samples == 2 and any("FIFO" in why for _, why in res.skipped)
    assert (out / "shards" / "latent-000-000000.tar").is_file() and (out / "dataset.json").is_file()
    assert run_loader([out], cfg()).keys == ["a", "b"]
    # recorded as done but its output replaced by a FIFO: encoded again, not trusted
    (out / "shards" / "latent-000-000000.tar").unlink()
    os.mkfifo(out / "shards" / "latent-000-000000.tar")
    with pytest.warns(UserWarning):
        again = _run(src, out)
    assert again.shards_done == 1 and (out / "shards" / "latent-000-000000.tar").is_file()


def test_bad_clips_and_nan_latents_are_skipped_with_reasons(clip_bytes, tmp_path):  # noqa: F811
    extra = [("garbage", dict(good_members("garbage", clip_bytes), mp4=b"\x00" * 500)),
             ("nanjson", dict(good_members("nanjson", clip_bytes),
                              json=good_members("nanjson", clip_bytes)["json"].replace(b'"fps": 8.0', b'"fps": NaN'))),
             ("poison", good_members("poison", clip_bytes))]
    src = _inputs(tmp_path, clip_bytes, extra)
    out = tmp_path / "lat"
    with pytest.warns(UserWarning, match="precompute skipped 3 sample"):
        res = _run(src, out)
    reasons = {n.rsplit(":", 1)[-1]: why for n, why in res.skipped}
    assert set(reasons) == {"garbage", "nanjson", "poison"} and "non-finite" in reasons["poison"]
    assert "NaN" in reasons["nanjson"] and res.samples == 2
    run = run_loader([out], cfg())
    assert run.keys == ["a", "b"] and all(torch.isfinite(b["latents"]).all() for b in run.batches)
