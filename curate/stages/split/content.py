"""The content detector: hard cuts, fades and dissolves from small luma frames, in numpy.

Signals (all on ~64 px wide luma):
- Each frame is contrast-normalised (zero mean, unit deviation), which removes exposure changes,
  uniform flashes and the dimming of a fade from the picture comparison.
- Camera motion is compensated: the global shift between neighbouring frames comes from phase
  correlation (pans, shake), then every block of the frame may still move a few pixels (zoom,
  moving objects) and keeps its best match. What is left, averaged over blocks, is the frame
  difference D: near 0 inside a shot however the camera moves, near 1 across a cut.
- Hard cut at i: D[i] clears an absolute threshold and the local median of D by a margin, and the
  picture before it does not come back within a few frames (which is what a flash does, see flashes.py).
- Fade through black: frames that are flat and dark, extended both ways while the contrast keeps
  falling towards them and rising away from them.
- Dissolve: a frame that is a linear blend of a frame before it and one after it, whose two ends
  differ like a cut does, while neither end alone explains it (motion is not a blend).
"""

from __future__ import annotations

import cv2
import numpy as np

from curate.stages.split.config import SplitConfig
from curate.stages.split.flashes import Looks, flash_spans, returning
from curate.stages.split.motion import aligned_diff, block_diff, global_shifts, normalise, shifted

_SEGMENT = 3000  # frames analysed at once: memory stays flat however long the video
_OVERLAP = 64  # context either side of a segment (windows, baselines and fades reach this far)


def detect(frames: np.ndarray, cfg: SplitConfig) -> tuple[list[int], list[tuple[int, int]]]:
    """Cuts (first frame of each new shot) and gradual transitions [start, end) of luma frames (N, H, W).

    Long videos go in overlapping segments; each boundary belongs to the segment whose core holds
    its cut."""
    n = len(frames)
    if n <= _SEGMENT + 2 * _OVERLAP:
        return _detect(frames, cfg)
    cuts: set[int] = set()
    transitions: list[tuple[int, int]] = []
    for core in range(0, n, _SEGMENT):
        core_end = min(n, core + _SEGMENT)
        a, b = max(0, core - _OVERLAP), min(n, core_end + _OVERLAP)
        seg_cuts, seg_trans = _detect(frames[a:b], cfg)
        cuts.update(c + a for c in seg_cuts if core <= c + a < core_end)
        transitions += [(s + a, e + a) for s, e in seg_trans if core <= e + a < core_end]
    return sorted(cuts), sorted(transitions)


def _detect(frames: np.ndarray, cfg: SplitConfig) -> tuple[list[int], list[tuple[int, int]]]:
    n = len(frames)
    if n < 2:
        return [], []
    z, mean, std = normalise(frames)
    shifts = global_shifts(z)
    idx = np.arange(1, n)
    d = np.zeros(n, np.float32)  # d[i]: difference between frame i-1 and frame i
    # Block matching only lowers a difference, and most neighbours already match after global
    # alignment: search blocks only where the aligned difference is not already small.
    move = shifts[1:]
    prev = shifted(z, idx - 1, move[:, 0], move[:, 1])
    d[1:] = block_diff(z[1:], prev, 0)
    busy = np.flatnonzero(d[1:] > 0.1)
    if len(busy):
        d[1 + busy] = block_diff(z[1 + busy], prev[busy], cfg.search_px)

    fades = _fades(mean, std, cfg)
    in_fade = np.zeros(n + 1, bool)
    for s, e in fades:
        in_fade[max(s - 1, 0):e + 1] = True
    # a black or flat frame makes the normalised difference meaningless (noise blown up)
    flat = std < cfg.dark_std
    hard, wide = _hard_cuts(z, mean, std, d, flat, in_fade, cfg)
    dissolves = _merge(_dissolves(frames, z, d, shifts, std, hard, in_fade, cfg) + wide)
    transitions = sorted(fades + dissolves)
    # a hard cut inside a gradual transition is part of it: the transition's end is the cut
    hard = [c for c in hard if not any(ts <= c < te for ts, te in transitions)]
    cuts = sorted(set(hard) | {e for _, e in transitions})
    return [c for c in cuts if 0 < c < n], transitions


def _extent(d: np.ndarray, i: int, level: float) -> tuple[int, int]:
    """The run of differences above `level` around d[i]: (first, last) indices."""
    lo, hi = i, i
    while lo - 1 >= 1 and d[lo - 1] > level:
        lo -= 1
    while hi + 1 < len(d) and d[hi + 1] > level:
        hi += 1
    return lo, hi


def _hard_cuts(z, mean, std, d, flat, in_fade, cfg: SplitConfig) -> tuple[list[int], list[tuple[int, int]]]:
    """Hard cuts, and fast gradual transitions: a peak of the difference that is wide (more than two
    frames above half its height) is a short dissolve or wipe, reported with its frames."""
    n = len(d)
    w = cfg.baseline_window
    cands, wide = [], []
    for i in range(1, n):
        if d[i] < cfg.cut_threshold or in_fade[i] or flat[i] or flat[i - 1]:
            continue
        lo, hi = max(1, i - w), min(n, i + w + 1)
        neigh = np.concatenate([d[lo:max(lo, i - 1)], d[min(hi, i + 2):hi]])
        base = float(np.median(neigh)) if len(neigh) else 0.0
        if d[i] < base + cfg.cut_margin:
            continue
        if i + 1 < n and d[i + 1] > d[i]:
            continue  # the next frame changes more: the cut is there (keeps one cut per boundary)
        a, b = _extent(d, i, base + (d[i] - base) / 2)
        if b - a + 1 <= 2:
            cands.append(i)
        else:
            a, b = _extent(d, i, base + (d[i] - base) / 4)
            wide.append((max(a - 1, 1), min(b + 1, n - 1)))  # the frames that changed
    # A flash (or a one-off glitch) changes the picture and then gives it back (flashes.py); so does a
    # short burst of changes that only looks like a fast dissolve.
    looks = Looks(z, mean, std)
    flashes = returning(looks, cands, cfg)
    flashed = flash_spans(looks, wide, cfg)
    return [i for i in cands if i not in flashes], [w for w in wide if w not in flashed]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _fades(mean: np.ndarray, std: np.ndarray, cfg: SplitConfig) -> list[tuple[int, int]]:
    """Fades through black: runs of dark flat frames, widened while contrast falls into them and
    rises out of them. Only those between two shots count (not a fade-in at the very start)."""
    n = len(std)
    ctx = 30
    # the brightest contrast within ctx frames before or after each frame
    padded = np.concatenate([np.full(ctx, -np.inf), std, np.full(ctx, -np.inf)])
    ref = np.lib.stride_tricks.sliding_window_view(padded, 2 * ctx + 1).max(axis=1)
    dark = (mean < cfg.dark_mean) & ((std < cfg.dark_std) | (std < cfg.fade_ratio * ref))
    out = []
    i = 0
    while i < n:
        if not dark[i]:
            i += 1
            continue
        a = i
        while i < n and dark[i]:
            i += 1
        b = i  # dark run [a, b)
        s = a
        while s > 0 and std[s - 1] > std[s] * 1.01 + 0.2:
            s -= 1
        e = b - 1
        while e + 1 < n and std[e + 1] > std[e] * 1.01 + 0.2:
            e += 1
        start, end = s + 1, e  # first darkened frame; first frame at full contrast again
        # between two shots with real contrast (a dark video or a dark shot is not a fade)
        lit = 2 * cfg.dark_std
        if end - start >= 2 and start > 0 and end < n and std[start - 1] > lit and std[end] > lit:
            out.append((start, end))
        i = max(i, e + 1)
    return out


def _dissolves(frames, z, d, shifts, std, hard, in_fade, cfg: SplitConfig) -> list[tuple[int, int]]:
    n = len(frames)
    # The blend test runs at half the analysis size; it only needs the coarse picture.
    hh, ww = frames.shape[1] // 2, frames.shape[2] // 2
    y = np.empty((n, hh, ww), np.float32)  # filled only where a window needs it (see _half)
    have = np.zeros(n, bool)
    pos = np.cumsum(shifts, axis=0) / 2
    hard_cum = np.concatenate([[0], np.cumsum(np.isin(np.arange(n), hard))])
    fade_cum = np.concatenate([[0], np.cumsum(in_fade[:n])])
    big = cfg.cut_threshold + cfg.cut_margin
    d_cum = np.concatenate([[0.0], np.cumsum(d)])
    hits = []  # (center, half-width)
    for h in cfg.dissolve_halfwidths:
        if n <= 2 * h:
            continue
        cs = np.arange(h, n - h)
        # no hard cut or fade inside the window, no cut-sized jump between neighbours
        ok = (hard_cum[cs + h + 1] - hard_cum[cs - h + 1] == 0) & (fade_cum[cs + h + 1] - fade_cum[cs - h] == 0)
        ok &= np.lib.stride_tricks.sliding_window_view(d[1:], 2 * h).max(axis=1)[cs - h] < big
        # ... and enough change across it for two different pictures at its ends
        ok &= d_cum[cs + h + 1] - d_cum[cs - h + 1] >= 0.5 * cfg.dissolve_min_change
        cs = cs[ok]
        if len(cs) == 0:
            continue
        _half(frames, y, have, np.concatenate([cs - h, cs, cs + h]))
        ma, mb = pos[cs] - pos[cs - h], pos[cs] - pos[cs + h]
        a_al = shifted(y, cs - h, ma[:, 0], ma[:, 1])
        b_al = shifted(y, cs + h, mb[:, 0], mb[:, 1])
        m = y[cs]
        diff = a_al - b_al
        alpha = ((m - b_al) * diff).sum(axis=(1, 2)) / np.maximum((diff * diff).sum(axis=(1, 2)), 1e-6)
        alpha_c = np.clip(alpha, 0, 1)[:, None, None]
        r_blend = np.abs(m - (alpha_c * a_al + (1 - alpha_c) * b_al)).mean(axis=(1, 2))
        near = np.minimum(np.abs(m - a_al).mean(axis=(1, 2)), np.abs(m - b_al).mean(axis=(1, 2)))
        ok = (alpha > 0.15) & (alpha < 0.85) & (r_blend < cfg.dissolve_fit * near) & \
             (near > 0.25 * np.maximum(std[cs], 4.0))
        cs = cs[ok]
        if len(cs) == 0:
            continue
        # the two ends must be different pictures, not one scene moved (checked last: the costliest)
        ends = aligned_diff(z, shifts, np.stack([cs + h, cs - h], 1), cfg.search_px)
        hits += [(int(c), h) for c in cs[ends >= cfg.dissolve_min_change]]
    if not hits:
        return []
    # a dissolve's centre passes at several window sizes; a lone pass is chance
    votes: dict[int, int] = {}
    for c, _ in hits:
        votes[c] = votes.get(c, 0) + 1
    need = min(2, len(cfg.dissolve_halfwidths))
    centres = sorted(c for c, v in votes.items() if v >= need)
    if not centres:
        return []
    # group centres that touch; they cover the middle of one dissolve
    groups, cur = [], [centres[0]]
    for c in centres[1:]:
        if c - cur[-1] <= 2:
            cur.append(c)
        else:
            groups.append(cur)
            cur = [c]
    groups.append(cur)
    out = []
    for g in groups:
        lo, hi = g[0], g[-1]
        # the blend test passes on the inner ~80% of a dissolve (alpha between 0.15 and 0.85)
        pad = int(0.2 * (hi - lo + 1) + 0.5)
        start, end = max(1, lo - pad), min(n - 1, hi + pad + 1)
        if end - start >= 2:
            out.append((start, end))
    return out


def _half(frames: np.ndarray, y: np.ndarray, have: np.ndarray, idx: np.ndarray) -> None:
    """Fill y[i] with frames[i] at half size for every i of `idx` not filled yet (most frames of a video
    never reach the blend test, so most are never resized)."""
    hh, ww = y.shape[1:]
    for i in np.unique(idx[~have[idx]]):
        y[i] = cv2.resize(frames[i], (ww, hh), interpolation=cv2.INTER_AREA)
    have[idx] = True
