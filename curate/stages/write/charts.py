"""The report's charts, drawn with Pillow (which also draws the contact sheet): the score histograms (kept
and rejected clips stacked, the thresholds dashed) and the rejection funnel. A few dozen rectangles and
labels each take milliseconds; matplotlib took about 2 CPU seconds of a run for the same two figures (its
import, layout and rendering), on the run's critical path."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KEPT, REJECTED, BAR, INK, GRID = (44, 160, 44), (214, 39, 40), (31, 119, 180), (0, 0, 0), (190, 190, 190)
PANEL_W, PANEL_H = 300, 230
LEFT, RIGHT, TOP, BOTTOM = 42, 12, 26, 34
BINS = 20


def _font(size: int = 11):
    return ImageFont.load_default(size=size)


def _tick(v: float, span: float) -> str:
    """A tick label with as many decimals as the axis' span needs (3 significant digits of it)."""
    decimals = max(0, 2 - int(np.floor(np.log10(span)))) if span > 0 else 2
    return f"{round(v, decimals):.{decimals}f}"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _dashed(draw: ImageDraw.ImageDraw, x: float, y0: float, y1: float) -> None:
    y = y0
    while y < y1:
        draw.line([(x, y), (x, min(y + 5, y1))], fill=INK, width=1)
        y += 9


def _panel(draw: ImageDraw.ImageDraw, x0: int, title: str, kept: np.ndarray, rejected: np.ndarray,
           thresholds: list[float], legend: bool) -> None:
    font = _font()
    draw.text((x0 + PANEL_W / 2, 6), title, fill=INK, font=_font(13), anchor="mt")
    left, right, top, bottom = x0 + LEFT, x0 + PANEL_W - RIGHT, TOP, PANEL_H - BOTTOM
    draw.rectangle([left, top, right, bottom], outline=INK)
    values = np.concatenate([kept, rejected])
    if values.size == 0:
        draw.text(((left + right) / 2, (top + bottom) / 2), "not scored", fill=INK, font=font, anchor="mm")
        return
    edges = np.histogram_bin_edges(values, bins=BINS)
    lo, hi = float(edges[0]), float(edges[-1])
    span = hi - lo or 1.0
    for t in thresholds:  # the axis reaches the thresholds, as a reader looks for them
        lo, hi = min(lo, t), max(hi, t)
    pad = 0.03 * ((hi - lo) or span)  # lines at the ends stay clear of the frame
    lo, hi = lo - pad, hi + pad
    span = hi - lo
    k_counts, _ = np.histogram(kept, bins=edges)
    r_counts, _ = np.histogram(rejected, bins=edges)
    ymax = max(1, int((k_counts + r_counts).max()))

    def px(v: float) -> float:
        return left + (v - lo) / span * (right - left)

    def py(c: float) -> float:
        return bottom - c / ymax * (bottom - top - 6)

    for a, b, k, r in zip(edges[:-1], edges[1:], k_counts, r_counts):
        xa, xb = px(a), max(px(b) - 1, px(a) + 1)
        if k:
            draw.rectangle([xa, py(k), xb, bottom], fill=KEPT)
        if r:
            draw.rectangle([xa, py(k + r), xb, py(k)], fill=REJECTED)
    for t in thresholds:
        _dashed(draw, px(t), top, bottom)
    for v in (lo, (lo + hi) / 2, hi):  # x ticks: the ends and the middle
        draw.line([(px(v), bottom), (px(v), bottom + 4)], fill=INK)
        draw.text((px(v), bottom + 6), _tick(v, span), fill=INK, font=font, anchor="mt")
    for c in (0, ymax):  # y ticks: clip counts
        draw.line([(left - 4, py(c)), (left, py(c))], fill=INK)
        draw.text((left - 6, py(c)), str(c), fill=INK, font=font, anchor="rm")
    if legend:
        for i, (name, color) in enumerate((("kept", KEPT), ("rejected", REJECTED))):
            y = top + 6 + 14 * i
            draw.rectangle([right - 70, y, right - 60, y + 9], fill=color)
            draw.text((right - 56, y - 1), name, fill=INK, font=_font(10))


def histograms_png(panels: list[tuple[str, np.ndarray, np.ndarray, list[float]]]) -> bytes:
    """One panel per score: (title, kept values, rejected values, threshold lines)."""
    img = Image.new("RGB", (PANEL_W * len(panels), PANEL_H), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, kept, rejected, thresholds) in enumerate(panels):
        _panel(draw, i * PANEL_W, title, kept, rejected, thresholds, legend=i == 0)
    return _png(img)


def funnel_png(counts: list[tuple[str, int]]) -> bytes:
    """Horizontal bars, top to bottom: how many clips remain after each reason."""
    font = _font(12)
    row, label_w, bar_w, pad = 26, 150, 360, 14
    img = Image.new("RGB", (label_w + bar_w + 60, pad * 3 + row * len(counts) + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((img.width / 2, 6), "rejection funnel", fill=INK, font=_font(13), anchor="mt")
    top = pad * 2
    most = max([c for _, c in counts] + [1])
    for i, (name, c) in enumerate(counts):
        y = top + i * row
        draw.text((label_w - 8, y + row / 2), name, fill=INK, font=font, anchor="rm")
        w = c / most * bar_w
        if w >= 1:
            draw.rectangle([label_w, y + 4, label_w + w, y + row - 4], fill=BAR)
        draw.text((label_w + w + 6, y + row / 2), str(c), fill=INK, font=font, anchor="lm")
    y = top + len(counts) * row + 2
    draw.line([(label_w, top), (label_w, y)], fill=GRID)
    draw.text((label_w + bar_w / 2, y + 4), "clips remaining", fill=INK, font=font, anchor="mt")
    return _png(img)
