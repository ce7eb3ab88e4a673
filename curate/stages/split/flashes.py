"""Telling brief flashes from cuts: the content before a flash comes back after it.

A flash (a photographer's flash, a lightning strike, a light swept over part of the picture, an
explosion's glare) brightens one to `flash_frames` frames, the whole picture or part of it, without
whiting it out; then the same shot goes on. Each changed frame looks like a cut to a frame difference,
and contrast normalisation only hides a flash that scales the picture uniformly. What no cut does: the
frame after the disturbance matches the frame before it. So a candidate boundary at frame i (frame i
differs from i - 1) is a flash when, for some disturbance of L <= flash_frames frames holding i, the last
frame before it (i - 1 - j) and the first frame after it (i + k, j + k = L) show the same picture.

Those two frames are up to flash_frames + 1 frames apart and the camera and the subjects may move
meanwhile: the second is moved onto the first by their own global shift (phase correlation between just
these two frames, not accumulated through the flash frames, whose shifts a flash can spoil), blocks are
then matched around it, and what is left is judged against the same gap between frames of the shot
itself. Fades and dissolves never match (their two ends are different shots, or one shot at two
brightnesses), so they are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from curate.stages.split.config import SplitConfig
from curate.stages.split.motion import block_diff, global_shifts, normalise


def pair_diff(z: np.ndarray, pairs: np.ndarray, radius: int) -> np.ndarray:
    """block_diff between z[a] and z[b] for each (a, b) of `pairs`, z[b] moved onto z[a] by the global
    shift between the two (phase correlation of that pair alone)."""
    if len(pairs) == 0:
        return np.zeros(0, np.float32)
    a, b = pairs[:, 0], pairs[:, 1]
    both = np.empty((2 * len(pairs),) + z.shape[1:], z.dtype)
    both[0::2], both[1::2] = z[a], z[b]
    move = -global_shifts(both)[1::2]  # the content's displacement from a to b, undone
    # to a fraction of a pixel (a few pairs: warping each costs nothing), where the detector's own frame
    # pairs round to whole pixels; the frames are further apart here, so the rounding would count more
    h, w = z.shape[1:]
    moved = np.stack([cv2.warpAffine(z[j], np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE) for j, (dx, dy) in zip(b, move)])
    return block_diff(z[a], moved, radius)


MAX_LEVEL = 0.45  # never call frames this different one picture (a cut's ends differ by 0.5 and more)
BRIGHTNESS_AGREE = 0.1  # the two sides of a flash agree in mean luma within this share of the range ...
CONTRAST_AGREE = 1.35  # ... and in contrast within this ratio (a fade's two sides do not)


@dataclass
class Looks:
    """Contrast-normalised frames and what normalising took out of each: its mean and deviation."""

    z: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, luma: np.ndarray) -> Looks:
        return cls(*normalise(luma))


def _matches(looks: Looks, pairs: list[tuple[int, int]], cfg: SplitConfig) -> np.ndarray:
    """For each (a, b): whether frame b shows frame a's picture, at its brightness. Over a gap of several
    frames a moving shot drifts even when nothing happened (codec noise, parallax, blur): the difference
    is judged against the same gap in the shot's own frames just before a and just after b (the
    smaller). A flat frame (black: the middle of a fade) shows no picture, so it matches nothing; the two
    sides of a fade show one picture at two brightnesses, so they do not match either."""
    z, n = looks.z, len(looks.z)
    arr = np.array(pairs, np.int64)
    radius = cfg.search_px + 1
    ok = (looks.std[arr[:, 0]] >= cfg.dark_std) & (looks.std[arr[:, 1]] >= cfg.dark_std)
    ok &= _lit_alike(looks, arr[:, 0], arr[:, 1])
    diff = np.full(len(arr), np.inf, np.float32)
    diff[ok] = pair_diff(z, arr[ok], radius)
    close = np.flatnonzero(diff < MAX_LEVEL)  # the rest are no match at any level: no reference needed
    if len(close) == 0:
        return np.zeros(len(arr), bool)
    sub = arr[close]
    gap = sub[:, 1] - sub[:, 0]
    refs = np.concatenate([np.stack([sub[:, 0] - gap, sub[:, 0]], 1), np.stack([sub[:, 1], sub[:, 1] + gap], 1)])
    inside = (refs[:, 0] >= 0) & (refs[:, 1] < n)
    ref_diff = np.full(len(refs), np.inf, np.float32)
    ref_diff[inside] = pair_diff(z, refs[inside], radius)
    ref = ref_diff.reshape(2, len(sub)).min(axis=0)
    ref = np.where(np.isfinite(ref), ref, 0.0)
    out = np.zeros(len(arr), bool)
    out[close] = diff[close] < np.clip(1.5 * ref + 0.05, 0.5 * cfg.cut_threshold, MAX_LEVEL)
    return out


def _lit_alike(looks: Looks, a, b):
    """Whether frames a and b have about the same brightness and contrast (arrays of indices, or one)."""
    sa, sb = looks.std[a], looks.std[b]
    return (np.abs(looks.mean[a] - looks.mean[b]) <= BRIGHTNESS_AGREE * 255) & \
        (np.maximum(sa, sb) <= CONTRAST_AGREE * np.minimum(sa, sb))


def returning(looks: Looks, boundaries: list[int], cfg: SplitConfig) -> set[int]:
    """The boundaries (frame i differs from frame i - 1) after which the picture before comes back within
    `flash_frames` frames: the last frame before the disturbance matches the first after it."""
    n = len(looks.z)
    pairs, owner = [], []
    for i in boundaries:
        for length in range(1, cfg.flash_frames + 1):
            for j in range(length + 1):  # j frames of the disturbance before i, length - j from i on
                a, b = i - 1 - j, i + length - j
                if a >= 0 and b < n:
                    pairs.append((a, b))
                    owner.append(i)
    if not pairs:
        return set()
    return {i for i, same in zip(owner, _matches(looks, pairs, cfg)) if same}


def flash_spans(looks: Looks, spans: list[tuple[int, int]], cfg: SplitConfig) -> set[tuple[int, int]]:
    """The spans of changed frames [s, e) (a fast gradual change) that are flashes: no longer than a flash
    with its way in and out, and the frame before matching the frame after."""
    n = len(looks.z)
    pairs, owner = [], []
    for s, e in spans:
        if e - s > cfg.flash_frames + 2:
            continue
        for a in (s - 1, s):  # the span's ends are where the difference falls to a quarter: allow a frame
            for b in (e, e - 1):
                if 0 <= a < b < n:
                    pairs.append((a, b))
                    owner.append((s, e))
    if not pairs:
        return set()
    return {span for span, same in zip(owner, _matches(looks, pairs, cfg)) if same}


def without_flashes(frames: np.ndarray, cuts: list[int], transitions: list[tuple[int, int]],
                    cfg: SplitConfig) -> tuple[list[int], list[tuple[int, int]]]:
    """Another splitter's cuts and transitions (TransNetV2's) less those that are flashes, judged on its own
    small frames ((N, h, w) luma or (N, h, w, 3) RGB): a hard cut after which the picture before it comes
    back, and a short transition whose two sides show the same picture."""
    luma = frames if frames.ndim == 3 else frames.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    looks = Looks.of(luma)
    gone = flash_spans(looks, transitions, cfg)
    kept_spans = [t for t in transitions if t not in gone]
    ends = {e for _, e in transitions}
    # only cuts where something happens: the network also places cuts inside dissolves, whose frames
    # change little from one to the next and would pass for a picture that came back
    hard = [c for c in cuts if c not in ends and 0 < c < len(luma)]
    if hard:
        step = pair_diff(looks.z, np.array([(c - 1, c) for c in hard], np.int64), cfg.search_px)
        hard = [c for c, d in zip(hard, step) if d >= cfg.cut_threshold or not _lit_alike(looks, c - 1, c)]
    hard_gone = returning(looks, hard, cfg)
    kept_ends = {e for _, e in kept_spans}
    return [c for c in cuts if c not in hard_gone and (c not in ends or c in kept_ends)], kept_spans
