"""`vfm-curate probe VIDEO [--json] [--strict]`: what the reader sees in one video, like ffprobe but ours."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("video", metavar="VIDEO", help="a video file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error at the first corrupt packet (default: skip and count)")
    parser.add_argument("--stream", type=int, default=None, metavar="INDEX",
                        help="describe this video stream (container index) instead of the best one")


def run(args) -> int:
    from curate.ids import path_text
    from dataload.probe import probe  # PyAV and OpenCV: imported when the command runs, not for --help

    info = probe(args.video, strict=args.strict, stream=args.stream)
    if args.json:
        d = info.to_dict()
        d["path"] = path_text(d["path"])
        print(json.dumps(d))
    else:
        print(format_info(info))
    return 0


def format_info(info) -> str:
    from curate.ids import path_text

    lines = [
        f"{path_text(info.path)}",
        f"  container            {info.container}",
        f"  video stream         #{info.stream_index} {info.codec}",
        f"  display size         {info.width}x{info.height}"
        + (f" (rotated {info.rotation} deg)" if info.rotation else ""),
        f"  coded size           {info.coded_width}x{info.coded_height}, "
        f"sample aspect {info.sample_aspect_ratio}",
        f"  frames (decoded)     {info.num_frames}",
        f"  fps                  {info.fps:.3f} average"
        + (f", {info.nominal_fps:.3f} nominal" if info.nominal_fps else "")
        + (", variable frame rate" if info.variable_frame_rate else ""),
        f"  duration             {info.duration_s:.3f} s",
        f"  decode errors        {info.decode_errors}",
        "  streams:",
    ]
    for s in info.streams:
        parts = [f"#{s.index}", s.type, s.codec or "?"]
        if s.width and s.height:
            parts.append(f"{s.width}x{s.height}")
        if s.fps:
            parts.append(f"{s.fps:.3f} fps")
        if s.num_frames:
            parts.append(f"{s.num_frames} frames (header)")
        if s.language:
            parts.append(f"[{s.language}]")
        if s.index == info.stream_index:
            parts.append("<- probed")
        lines.append("    " + " ".join(parts))
    return "\n".join(lines)
