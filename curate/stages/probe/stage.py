"""The probe stage: what a source is, from one decoding pass, and the whole-video rules (skip: too short,
too small). A still image (one frame read by an image demuxer: PNG, JPEG, WebP, ...) is a source like a
video; the duration rule does not apply to it.

The pass also reads the analysis track (every frame as small luma, analysis-grade decoding) when the
pipeline's splitter wants it, so the splitter does not decode the video a second time.
"""

from __future__ import annotations

from curate.stages.probe.config import ProbeConfig
from curate.stages.probe.fetch import fetch_remote
from curate.stages.split.frames import read_analysis
from curate.step import PipelineStep, Resources
from curate.task import SourceTask
from dataload.files import regular_file_size
from dataload.reader import VideoReader


class ProbeStage(PipelineStep):
    name = "probe"
    resources = Resources(cpus=1.0)

    def __init__(self, config: ProbeConfig, analysis_width: int | None = None) -> None:
        self.config = config
        self.analysis_width = analysis_width  # luma frames this wide for the splitter; None: none wanted

    def process_task(self, task: SourceTask) -> None:
        if task.local_path is None:
            task.local_path = fetch_remote(task)
        # Regular files only: a FIFO, socket or device fails here with its kind named (opening one would
        # block or read forever); a missing file fails as "not found".
        if regular_file_size(task.local_path, "video") == 0:
            task.fail("probe: empty file (0 bytes)")
            return
        cfg = self.config
        cap = cfg.max_pixels
        analysis = self.analysis_width is not None
        with VideoReader(task.local_path, backend=cfg.backend, fast_luma=analysis) as reader:
            w, h = reader.header_size
            if w * h > cap:  # before the decoding pass allocates frames of that size
                task.fail(f"probe: frame size {w}x{h} declared by the file is over probe.max_pixels ({cap})")
                return
            if analysis:
                task.analysis = read_analysis(reader, self.analysis_width)
            info = reader.info  # the pass above already counted the frames: no second decode
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
        task.image = is_image(info.container, len(times))
        if task.duration_s < cfg.min_duration_s and not task.image:
            task.skip(f"video_too_short ({task.duration_s:.3f} s < {cfg.min_duration_s} s)")
        elif task.width < cfg.min_width or task.height < cfg.min_height:
            task.skip(f"video_too_small ({task.width}x{task.height} < {cfg.min_width}x{cfg.min_height})")


def is_image(container: str, num_frames: int) -> bool:
    """One frame read by one of FFmpeg's image demuxers (`png_pipe`, `jpeg_pipe`, `image2`, ...)."""
    name = (container or "").split(",")[0]
    return num_frames == 1 and (name.endswith("_pipe") or name.startswith("image2"))
