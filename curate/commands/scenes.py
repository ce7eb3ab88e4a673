"""`vfm-curate scenes VIDEO... [--json] [--splitter auto|content|transnetv2|fixed]`: shot boundaries.

With --json, one JSON object per video (JSON Lines) as DESIGN.md section 3 gives; times come from
the stream's timestamps. A video that cannot be read gets one line on stderr; the others still run
and the exit status is 2.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from curate.errors import CurateError
from curate.ids import path_text
from curate.stages.split.config import SPLITTERS, SplitConfig

if TYPE_CHECKING:  # numpy: not for --help
    from curate.stages.split.result import SceneResult


def add_arguments(parser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    parser.add_argument("--json", action="store_true", help="one JSON object per video (JSON Lines)")
    parser.add_argument("--splitter", choices=SPLITTERS, default="auto",
                        help="auto (content on a CPU-only machine, transnetv2 with CUDA), content, "
                             "transnetv2 or fixed (default: auto)")
    parser.add_argument("--fixed-stride", type=float, default=SplitConfig.fixed_stride_s, metavar="SECONDS",
                        help="scene length of the fixed splitter (default: %(default)s)")


def to_dict(video: str, r: SceneResult) -> dict:
    return {
        "video": video,
        "fps": round(r.fps, 6),
        "num_frames": r.num_frames,
        "cuts": [{"frame": c, "time": round(r.time_of(c), 6)} for c in r.cuts],
        "transitions": [{"start_frame": s, "end_frame": e} for s, e in r.transitions],
        "scenes": [{"start_frame": s, "end_frame": e, "start_s": round(r.time_of(s), 6),
                    "end_s": round(r.time_of(e), 6)} for s, e in r.scenes],
    }


def format_text(video: str, r: SceneResult) -> str:
    lines = [f"{video}: {r.num_frames} frames, {r.fps:.3f} fps, {len(r.scenes)} scenes, {len(r.cuts)} cuts "
             f"({r.splitter})"]
    trans = {e: (s, e) for s, e in r.transitions}
    for c in r.cuts:
        what = (f"after a transition over frames {trans[c][0]}-{c - 1}" if c in trans else "hard cut")
        lines.append(f"  cut at frame {c:6d}  {r.time_of(c):9.3f} s  {what}")
    for i, (s, e) in enumerate(r.scenes):
        lines.append(f"  scene {i:3d}: frames {s}-{e - 1}  {r.time_of(s):.3f}-{r.time_of(e):.3f} s")
    return "\n".join(lines)


def run(args) -> int:
    # the detector (numpy, PyAV, OpenCV; torch for TransNetV2 only) when the command runs, not for --help
    from curate.stages.split.detector import SceneDetector
    from dataload.errors import VideoError
    from dataload.files import describe_os_error

    if not args.fixed_stride > 0:
        raise CurateError(f"--fixed-stride must be above 0, got {args.fixed_stride}")
    detector = SceneDetector(SplitConfig(splitter=args.splitter, fixed_stride_s=args.fixed_stride))
    failed = 0
    for video, result in detector.detect_many(args.videos):
        if isinstance(result, Exception):
            if not isinstance(result, (VideoError, OSError)):
                raise result
            # a missing file, a FIFO or folder, not a video: one line each
            msg = describe_os_error(result) if isinstance(result, OSError) else str(result)
            print(f"vfm-curate scenes: error: {' '.join(path_text(msg).split())}", file=sys.stderr)
            failed += 1
            continue
        name = path_text(video)
        print(json.dumps(to_dict(name, result)) if args.json else format_text(name, result), flush=True)
    return 2 if failed else 0
