"""Probe: open the source, record what it is, apply the whole-video rules (skip: too short, too small)."""

from __future__ import annotations

import os
import shutil

from curate.config import ProbeConfig
from curate.stage import Resources, SourceTask, Stage
from dataload.files import regular_file_size


def fetch_remote(task: SourceTask) -> str:
    """Copy an fsspec URL into the task's work dir once; decoders want a local file."""
    import fsspec

    ext = os.path.splitext(task.source.split("?", 1)[0])[1] or ".bin"
    dest = os.path.join(task.work_dir or ".", f"source{ext}")
    if not os.path.exists(dest):
        tmp = dest + ".part"
        with fsspec.open(task.source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, dest)
    return dest


class ProbeStage(Stage):
    name = "probe"
    resources = Resources(cpus=1.0)

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config

    def process_task(self, task: SourceTask) -> None:
        from dataload.reader import VideoReader

        if task.local_path is None:
            task.local_path = fetch_remote(task)
        # Regular files only: a FIFO, socket or device fails here with its kind named (opening one would
        # block or read forever); a missing file fails as "not found".
        if regular_file_size(task.local_path, "video") == 0:
            task.fail("probe: empty file (0 bytes)")
            return
        cap = self.config.max_pixels
        with VideoReader(task.local_path, backend=self.config.backend) as reader:
            w, h = reader.header_size
            if w * h > cap:  # before the decoding pass allocates frames of that size
                task.fail(f"probe: frame size {w}x{h} declared by the file is over probe.max_pixels ({cap})")
                return
            info = reader.info
            times = [float(t) for t in reader.timestamps()]
            task.decode_errors = int(max(getattr(reader, "decode_errors", 0) or 0, info.decode_errors or 0))
        if info.coded_width * info.coded_height > cap:
            task.fail(f"probe: frame size {info.coded_width}x{info.coded_height} is over probe.max_pixels ({cap})")
            return
        task.codec = info.codec
        task.width, task.height = int(info.width), int(info.height)
        task.num_frames = len(times)
        task.fps = float(info.fps)
        task.frame_times = times
        task.duration_s = float(info.duration_s)
        if not times:
            task.fail("probe: no decodable video frames")
            return
        cfg = self.config
        if task.duration_s < cfg.min_duration_s:
            task.skip(f"video_too_short ({task.duration_s:.3f} s < {cfg.min_duration_s} s)")
        elif task.width < cfg.min_width or task.height < cfg.min_height:
            task.skip(f"video_too_small ({task.width}x{task.height} < {cfg.min_width}x{cfg.min_height})")
