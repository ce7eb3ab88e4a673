"""Motion-compensated frame differences on small luma frames (numpy, OpenCV): contrast normalisation, the
global shift between frames by phase correlation, and block matching around it. The content detector and
the flash test compare frames through these."""

from __future__ import annotations

import cv2
import numpy as np

_BLOCK = 8  # analysis pixels per block side


def normalise(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contrast-normalised float32 frames, and each frame's luma mean and std."""
    y = frames.astype(np.float32)
    mean = y.mean(axis=(1, 2))
    std = y.std(axis=(1, 2))
    z = (y - mean[:, None, None]) / np.maximum(std, 2.0)[:, None, None]
    return z, mean, std


def global_shifts(z: np.ndarray) -> np.ndarray:
    """(N, 2) content displacement (dx, dy) from frame i-1 to frame i by phase correlation, to a
    fraction of a pixel; row 0 is zero, and so is a pair without a clear peak (a cut).

    All frames are transformed at once (one FFT per frame, not two per pair), at half the analysis
    size: a global shift needs no fine detail, and the block search absorbs the rounding."""
    n = len(z)
    h2, w2 = z.shape[1] // 2, z.shape[2] // 2
    if h2 < 8:
        return _phase_shifts(z)
    half = z[:, :2 * h2, :2 * w2].reshape(n, h2, 2, w2, 2).mean(axis=(2, 4))
    return 2 * _phase_shifts(half)


def _phase_shifts(z: np.ndarray) -> np.ndarray:
    n, h, w = z.shape
    out = np.zeros((n, 2), np.float32)
    if n < 2:
        return out
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    spec = np.fft.rfft2(z * win)
    cross = spec[1:] * np.conj(spec[:-1])
    cross /= np.abs(cross) + 1e-9
    corr = np.fft.irfft2(cross, s=(h, w))  # (N-1, h, w); peak at the displacement
    peak = corr.reshape(n - 1, -1).argmax(axis=1)
    py, px = np.divmod(peak, w)
    rows = np.arange(n - 1)
    # sub-pixel: a parabola through the peak and its two neighbours, per axis
    c0 = corr[rows, py, px]
    ym, yp = corr[rows, (py - 1) % h, px], corr[rows, (py + 1) % h, px]
    xm, xp = corr[rows, py, (px - 1) % w], corr[rows, py, (px + 1) % w]
    fy = np.clip(0.5 * (ym - yp) / np.minimum(ym - 2 * c0 + yp, -1e-9), -0.5, 0.5)
    fx = np.clip(0.5 * (xm - xp) / np.minimum(xm - 2 * c0 + xp, -1e-9), -0.5, 0.5)
    dy = np.where(py > h // 2, py - h, py) + fy
    dx = np.where(px > w // 2, px - w, px) + fx
    ok = (c0 > 0.08) & (np.abs(dx) < w / 3) & (np.abs(dy) < h / 3)
    out[1:, 0] = np.where(ok, dx, 0)
    out[1:, 1] = np.where(ok, dy, 0)
    return out


def shifted(frames: np.ndarray, idx: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """frames[idx[k]] with its content moved by (dx[k], dy[k]) whole pixels, edges repeated: one gather."""
    _, h, w = frames.shape
    ix, iy = np.rint(dx).astype(np.int64), np.rint(dy).astype(np.int64)
    out = frames[idx]  # most pairs do not move (a still camera): a plain copy, the gather only for the rest
    moved = np.flatnonzero((ix != 0) | (iy != 0))
    if len(moved):
        rows = np.clip(np.arange(h)[None, :] - iy[moved, None], 0, h - 1)
        cols = np.clip(np.arange(w)[None, :] - ix[moved, None], 0, w - 1)
        out[moved] = frames[idx[moved, None, None], rows[:, :, None], cols[:, None, :]]
    return out


def block_diff(a: np.ndarray, b: np.ndarray, radius: int) -> np.ndarray:
    """Per pair (a[k], b[k]) of (P, H, W) frames: the mean over blocks of the smallest mean absolute
    difference when the block of `a` is matched within +-radius pixels in `b`."""
    p, h, w = a.shape
    hb, wb = max(h // _BLOCK, 1), max(w // _BLOCK, 1)
    bh, bw = h // hb, w // wb
    hh, ww = hb * bh, wb * bw
    a = np.ascontiguousarray(a[:, :hh, :ww], dtype=np.float32)
    bp = np.pad(b, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    best = None
    diff = np.empty_like(a)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            np.subtract(a, bp[:, radius + dy:radius + dy + hh, radius + dx:radius + dx + ww], out=diff)
            np.abs(diff, out=diff)
            # block sums: along rows of each block, then along its columns (contiguous reductions)
            # block means: an area resize of the frames stacked vertically (blocks never straddle two
            # frames since hh is a whole number of blocks); far faster than numpy's small-axis reductions
            d = cv2.resize(diff.reshape(p * hh, ww), (wb, p * hb), interpolation=cv2.INTER_AREA).reshape(p, hb, wb)
            best = d if best is None else np.minimum(best, d, out=best)
    return best.mean(axis=(1, 2))


def aligned_diff(z: np.ndarray, shifts: np.ndarray, pairs: np.ndarray, radius: int) -> np.ndarray:
    """block_diff between z[i] and z[j] for each (i, j) in `pairs`, z[j] moved onto z[i] first by
    the accumulated global shift between them."""
    if len(pairs) == 0:
        return np.zeros(0, np.float32)
    pos = np.cumsum(shifts, axis=0)
    i, j = pairs[:, 0], pairs[:, 1]
    move = pos[i] - pos[j]
    return block_diff(z[i], shifted(z, j, move[:, 0], move[:, 1]), radius)
