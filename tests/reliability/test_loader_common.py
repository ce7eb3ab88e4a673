"""Shared material for the shard and loader cases of the hostile-input suite (no tests here).

One tiny real H.264 clip (made once per session with dataload.synthetic) is the good sample everywhere;
every case writes its own small shard folder around it. `run_loader` indexes and reads a whole epoch in a
daemon thread and fails the case as hung when that takes too long, so a regression that blocks (a FIFO
opened, a device read) fails its case instead of stopping the suite.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from dataload.errors import LoaderWarning
from dataload.loader import LoaderConfig, build_loader
from dataload.shards import ShardWriter

CLIP_SIZE = 32
CLIP_FRAMES = 6
CLIP_FPS = 8.0
HANG_S = 30.0


def cfg(**kw: Any) -> LoaderConfig:
    """Small, fast and ordered: one 4-frame 32x32 bucket, no shuffling, batches of one."""
    base: dict[str, Any] = dict(batch_size=1, num_frames=4, fps=None, buckets=[(CLIP_SIZE, CLIP_SIZE)],
                                shuffle_shards=False, shuffle_buffer=0, start="center")
    base.update(kw)
    return LoaderConfig(**base)


@pytest.fixture(scope="session")
def clip_bytes(tmp_path_factory) -> bytes:
    from dataload.synthetic import Shot, make_video

    p = tmp_path_factory.mktemp("reliability_clip") / "clip.mp4"
    make_video(p, [Shot("pan", num_frames=CLIP_FRAMES, seed=3)], width=CLIP_SIZE, height=CLIP_SIZE, fps=CLIP_FPS,
               seed=3)
    return p.read_bytes()


def meta(key: str, **over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"clip_id": key, "source": f"{key}.mp4", "start_s": 0.0, "end_s": CLIP_FRAMES / CLIP_FPS,
                         "start_frame": 0, "end_frame": CLIP_FRAMES, "num_frames": CLIP_FRAMES, "fps": CLIP_FPS,
                         "width": CLIP_SIZE, "height": CLIP_SIZE, "caption": f"caption of {key}"}
    m.update(over)
    return m


def good_members(key: str, clip: bytes, **over: Any) -> dict[str, bytes]:
    m = meta(key, **over)
    return {"mp4": clip, "json": json.dumps(m).encode(), "txt": m["caption"].encode()}


def curated_dir(root: Path) -> Path:
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"kind": "curated"}))
    return root


def write_samples(root: Path, samples: list[tuple[str, dict[str, bytes]]], index: int = 0) -> Path:
    """One shard `shard-<index>.tar` of the curated folder `root` holding `samples` in order."""
    curated_dir(root)
    with ShardWriter(root / "shards", start_index=index, max_samples_per_shard=len(samples) + 1) as w:
        for key, members in samples:
            w.write(key, members)
    return root / "shards" / f"shard-{index:06d}.tar"


def tar_member(t: tarfile.TarFile, name: str, data: bytes = b"", type_: bytes = tarfile.REGTYPE, *,
               linkname: str = "", size: int | None = None, pax: dict[str, str] | None = None,
               write_data: bool | None = None) -> None:
    """Add any member, honest or not: `size` overrides the declared size, `write_data` whether bytes follow."""
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.size = len(data) if size is None else size
    if pax:
        info.pax_headers = dict(pax)
    if write_data is None:
        write_data = type_ in (tarfile.REGTYPE, tarfile.AREGTYPE)
    if write_data:
        t.addfile(info, io.BytesIO(data))
    else:
        buf = info.tobuf(t.format, t.encoding, t.errors)
        t.fileobj.write(buf)
        t.offset += len(buf)


def raw_tar(path: Path, build: Callable[[tarfile.TarFile], None], fmt: int = tarfile.GNU_FORMAT) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        build(t)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def add_sample(t: tarfile.TarFile, key: str, clip: bytes, **over: Any) -> None:
    for ext, data in sorted(good_members(key, clip, **over).items()):
        tar_member(t, f"{key}.{ext}", data)


def bounded(fn: Callable[[], Any], timeout: float = HANG_S, what: str = "the loader") -> Any:
    """fn() in a daemon thread; the case fails as hung after `timeout` (the thread is left behind)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        pytest.fail(f"{what} hung for {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class Run:
    """One epoch of a loader: its batches, its LoaderWarning lines, the loader."""

    def __init__(self, loader, batches: list[dict], warned: list[str]):
        self.loader = loader
        self.batches = batches
        self.warned = warned

    @property
    def keys(self) -> list[str]:
        return [m["clip_id"] for b in self.batches for m in b["meta"]]

    @property
    def skipped_names(self) -> str:
        return "\n".join(n for n, _ in self.loader.skipped)

    @property
    def text(self) -> str:
        return "\n".join(self.warned)


def run_loader(sources: list, config: LoaderConfig | None = None, timeout: float = HANG_S) -> Run:
    """Build a loader and read one epoch, bounded in time; every batch is checked for consistency."""
    config = config or cfg()

    def go():
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            loader = build_loader([str(s) for s in sources], config)
            batches = list(loader)
        return loader, batches, [str(r.message) for r in rec if issubclass(r.category, LoaderWarning)]

    loader, batches, warned = bounded(go, timeout)
    for line in warned:
        assert "\n" not in line and "\r" not in line, f"a LoaderWarning of several lines: {line!r}"
    for b in batches:
        check_batch(b, config)
    return Run(loader, batches, warned)


def check_batch(b: dict, config: LoaderConfig) -> None:
    """The batch contract: num_samples rows everywhere; zero only when something was skipped."""
    n = b["num_samples"]
    assert len(b["meta"]) == len(b["caption"]) == b["pad_mask"].shape[0] == n
    if "video" in b and config.pack_tokens is None:
        assert b["video"].shape[0] == n and b["video"].dim() == 5
    if "latents" in b and config.pack_tokens is None:
        assert b["latents"].shape[0] == n and b["latents"].dim() == 5
        assert b["text"].shape[0] == b["text_mask"].shape[0] == n
    if n == 0:
        assert b["skipped"], "an empty batch must say what was skipped"
