"""Pictures of generated videos: rows of frames beside their prompt, with per-attribute marks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

GOOD, BAD, NONE = (30, 150, 60), (200, 40, 40), (150, 150, 150)


def strip_grid(rows: Sequence[dict], path: str | Path, *, frames_per_row: int = 8, scale: int = 2,
               label_width: int = 330, title: str | None = None) -> Path:
    """rows: {"label": str, "frames": (T, H, W, 3) uint8, "marks": [(name, True|False|None), ...],
    optional "reference": frames shown in a second line (e.g. the ground truth)}. Writes a PNG."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("no rows to draw")
    h, w = rows[0]["frames"].shape[1:3]
    fh, fw = h * scale, w * scale
    gap = 3
    line_h = fh + gap
    heights = [line_h * (2 if r.get("reference") is not None else 1) + 6 for r in rows]
    top = 18 if title else 4
    width = label_width + frames_per_row * (fw + gap)
    canvas = Image.new("RGB", (width, top + sum(heights)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0))
    y = top
    for row, height in zip(rows, heights):
        lines = [(row["frames"], None)]
        if row.get("reference") is not None:
            lines.append((row["reference"], "ground truth"))
        for k, (frames, tag) in enumerate(lines):
            idx = np.linspace(0, len(frames) - 1, min(len(frames), frames_per_row)).round().astype(int)
            for j, i in enumerate(idx):
                tile = np.asarray(frames[i]).repeat(scale, 0).repeat(scale, 1)
                canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (label_width + j * (fw + gap), y + k * line_h))
            if tag:
                draw.text((8, y + k * line_h + 4), tag, fill=(90, 90, 90))
        _wrap(draw, row["label"], 6, y + 2, label_width - 10)
        x = 6
        for name, ok in row.get("marks", []):
            colour = NONE if ok is None else GOOD if ok else BAD
            text = f"{name} {'ok' if ok else '-' if ok is None else 'x'}"
            tw = int(draw.textlength(text)) + 8
            draw.rectangle((x, y + fh - 16, x + tw, y + fh - 2), fill=colour)
            draw.text((x + 4, y + fh - 15), text, fill=(255, 255, 255))
            x += tw + 4
        y += height
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)
    return path


def _wrap(draw, text: str, x: int, y: int, width: int) -> None:
    words, line, lines = text.split(), "", []
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial) > width and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    for k, ln in enumerate(lines[:4]):
        draw.text((x, y + 12 * k), ln, fill=(0, 0, 0))
