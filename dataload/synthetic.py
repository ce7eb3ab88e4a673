"""Synthetic test videos with exact ground truth.

Tests, benchmarks and the demo need videos whose shots, cuts, transitions and frame times are known
exactly. A video here is a list of `Shot`s joined by `Transition`s; every frame is a pure function of
(shot, frame index, seed), so the same arguments always give the same pixels.

Frame layout: shot 0's frames, then transition 0's frames, then shot 1's frames, ... A hard cut has no
frames of its own. During a gradual transition both shots keep moving (their clocks run through it),
so a dissolve between two pans looks like a real one. Ground truth follows DESIGN.md section 2: a cut
is the first frame of the new shot (for a gradual transition, the first frame after it) and
transitions are half-open frame spans.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from dataload.files import atomic_write_text

SHOT_KINDS = ("static", "texture", "objects", "pan", "zoom", "shake", "noise")
# How a flash brightens its frames (none is a white-out: the picture stays visible under it):
#   white  0.75 of the way to white (the original kind)      gain   the picture multiplied (1 + strength)
#   lift   strength x 255 added                              gamma  a brightening tone curve
#   spot   a soft round patch somewhere (part of the frame)  side   a ramp from one edge (part of the frame)
FLASH_KINDS = ("white", "gain", "lift", "gamma", "spot", "side")
TRANSITION_KINDS = ("cut", "fade", "dissolve")

# Default camera speed per kind: pan in output pixels per frame, zoom as total scale change over
# the shot, shake as jitter amplitude in pixels, objects as object pixels per frame.
_DEFAULT_SPEED = {"pan": 2.0, "zoom": 0.5, "shake": 3.0, "objects": 2.0}


@dataclass
class Shot:
    """One shot. `flash_at` lists frame indices (within the shot) where a flash of `flash_len` frames starts:
    a brief brightening of `flash_kind` (FLASH_KINDS) after which the same shot goes on; `flash_strength`
    scales it (each flash of a shot varies a little around it, seeded)."""

    kind: str = "texture"
    num_frames: int = 25
    seed: int = 0
    blur: float = 0.0  # Gaussian sigma in output pixels; 0 is sharp
    brightness: float = 1.0  # multiplies the picture; 0.05 is nearly black
    flash_at: Sequence[int] = ()
    flash_len: int = 2  # frames per flash
    flash_kind: str = "white"
    flash_strength: float = 0.6
    speed: float | None = None  # see _DEFAULT_SPEED; None takes the kind's default
    direction: float = 0.0  # pan direction in degrees (0 = content moves left, camera right)

    def __post_init__(self) -> None:
        if self.kind not in SHOT_KINDS:
            raise ValueError(f"unknown shot kind {self.kind!r}; expected one of {SHOT_KINDS}")
        if self.num_frames < 1:
            raise ValueError("a shot needs at least one frame")
        if self.flash_kind not in FLASH_KINDS:
            raise ValueError(f"unknown flash kind {self.flash_kind!r}; expected one of {FLASH_KINDS}")


@dataclass
class Transition:
    """How two shots join: `cut` (no frames), `fade` through black, or `dissolve`, over `length` frames."""

    kind: str = "cut"
    length: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TRANSITION_KINDS:
            raise ValueError(f"unknown transition kind {self.kind!r}; expected one of {TRANSITION_KINDS}")
        if self.kind == "cut":
            self.length = 0
        elif self.length < 2:
            raise ValueError(f"a {self.kind} needs length >= 2, got {self.length}")


@dataclass
class VideoTruth:
    """Exact ground truth of a synthetic video.

    cuts: first frame of each new shot (after a gradual transition, the first frame after it).
    kinds: the transition kind of each cut ("cut", "fade", "dissolve"), parallel to `cuts`.
    transitions: half-open spans of the gradual transitions' own frames.
    boundaries: half-open span of every boundary, parallel to `cuts` (a hard cut c is (c, c)).
    shots: half-open spans of each shot's own frames (transition frames excluded).
    frame_times: seconds from the first frame, as written in the stream (to the container's 1 ms
    resolution for Matroska/WebM).
    flashes: frame indices (global) that are flashed.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    cuts: list[int]
    transitions: list[tuple[int, int]]
    frame_times: list[float]
    shots: list[tuple[int, int]]
    kinds: list[str] = field(default_factory=list)
    boundaries: list[tuple[int, int]] = field(default_factory=list)
    flashes: list[int] = field(default_factory=list)
    variable_frame_rate: bool = False

    @property
    def hard_cuts(self) -> list[int]:
        return [c for c, k in zip(self.cuts, self.kinds) if k == "cut"]


def layout(shots: Sequence[Shot], transitions: Sequence[Transition]) -> tuple[
        list[tuple[int, int]], list[tuple[int, int]], list[str], list[int]]:
    """Shot spans, boundary spans, boundary kinds and global flash frames of a shot list."""
    if len(transitions) != max(len(shots) - 1, 0):
        raise ValueError(f"{len(shots)} shots need {max(len(shots) - 1, 0)} transitions, got {len(transitions)}")
    shot_spans, bounds, kinds, flashes = [], [], [], []
    pos = 0
    for i, shot in enumerate(shots):
        shot_spans.append((pos, pos + shot.num_frames))
        flashes += sorted({pos + f + j for f in shot.flash_at for j in range(shot.flash_len)
                           if 0 <= f + j < shot.num_frames})
        pos += shot.num_frames
        if i < len(transitions):
            tr = transitions[i]
            bounds.append((pos, pos + tr.length))
            kinds.append(tr.kind)
            pos += tr.length
    return shot_spans, bounds, kinds, flashes


def total_frames(shots: Sequence[Shot], transitions: Sequence[Transition]) -> int:
    return sum(s.num_frames for s in shots) + sum(t.length for t in transitions)


class _ShotRenderer:
    """Renders frame t of one shot (t may run past num_frames while a transition plays)."""

    def __init__(self, shot: Shot, width: int, height: int, before: int, after: int, seed: int) -> None:
        self.shot, self.w, self.h, self.offset = shot, width, height, before
        extra_frames = before + after
        self.rng_seed = (seed * 1_000_003 + shot.seed * 7919 + 17) & 0xFFFFFFFF
        rng = np.random.default_rng(self.rng_seed)
        self.speed = shot.speed if shot.speed is not None else _DEFAULT_SPEED.get(shot.kind, 0.0)
        self.frames = shot.num_frames + extra_frames
        pad = 8
        cw, ch = width + 2 * pad, height + 2 * pad
        if shot.kind == "pan":
            travel = abs(self.speed) * self.frames + 2
            ang = np.deg2rad(shot.direction)
            cw = int(width + abs(np.cos(ang)) * travel) + 2 * pad
            ch = int(height + abs(np.sin(ang)) * travel) + 2 * pad
        self.canvas = _make_canvas(rng, ch, cw)
        if shot.kind == "objects":
            n = 4
            self.obj_pos = rng.random((n, 2)) * [width, height]
            ang = rng.random(n) * 2 * np.pi
            self.obj_vel = np.stack([np.cos(ang), np.sin(ang)], 1) * self.speed
            self.obj_size = rng.integers(max(4, height // 10), max(6, height // 4), n)
            self.obj_col = rng.integers(0, 256, (n, 3))
        self.jitter = rng.standard_normal((self.frames + 1, 2)) * self.speed if shot.kind == "shake" else None

    def frame(self, t: int) -> np.ndarray:
        s, w, h = self.shot, self.w, self.h
        cy, cx = self.canvas.shape[0] / 2, self.canvas.shape[1] / 2
        if s.kind in ("static", "texture", "objects", "noise"):
            y0, x0 = (self.canvas.shape[0] - h) // 2, (self.canvas.shape[1] - w) // 2
            img = self.canvas[y0:y0 + h, x0:x0 + w].copy()
        elif s.kind == "pan":
            ang = np.deg2rad(s.direction)
            travel = self.speed * t - self.speed * self.frames / 2
            img = cv2.getRectSubPix(self.canvas, (w, h), (cx + np.cos(ang) * travel, cy + np.sin(ang) * travel))
        elif s.kind == "zoom":
            scale = 1.0 + self.speed * t / max(self.frames - 1, 1)
            m = np.float32([[scale, 0, w / 2 - scale * cx], [0, scale, h / 2 - scale * cy]])
            img = cv2.warpAffine(self.canvas, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        else:  # shake
            dx, dy = self.jitter[min(t, len(self.jitter) - 1)]
            img = cv2.getRectSubPix(self.canvas, (w, h), (cx + dx, cy + dy))
        if s.kind == "objects":
            for p, v, r, c in zip(self.obj_pos, self.obj_vel, self.obj_size, self.obj_col):
                x, y = _bounce(p[0] + v[0] * t, w), _bounce(p[1] + v[1] * t, h)
                cv2.circle(img, (int(x), int(y)), int(r), tuple(int(k) for k in c), -1, lineType=cv2.LINE_AA)
        if s.kind in ("texture", "noise"):
            amp = 3.0 if s.kind == "texture" else 60.0
            noise = np.random.default_rng((self.rng_seed + 1 + t) & 0xFFFFFFFF).standard_normal((h, w, 1)) * amp
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        if s.blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), s.blur)
        if s.brightness != 1.0:
            img = np.clip(img.astype(np.float32) * s.brightness, 0, 255).astype(np.uint8)
        local = t - self.offset  # flashes are placed on the shot's own frames
        for n, f in enumerate(s.flash_at):
            if 0 <= local < s.num_frames and f <= local < f + s.flash_len:
                img = self._flash(img, n, local - f)
        return img

    def _flash(self, img: np.ndarray, n: int, k: int) -> np.ndarray:
        """Frame k of flash n of this shot, brightened as `flash_kind` says."""
        s = self.shot
        if s.flash_kind == "white":
            return (img.astype(np.float32) * 0.25 + 0.75 * 255).astype(np.uint8)
        rng = np.random.default_rng((self.rng_seed * 31 + n * 977 + 5) & 0xFFFFFFFF)
        strength = s.flash_strength * rng.uniform(0.75, 1.25)
        if s.flash_len > 2 and 0 < k < s.flash_len - 1:
            strength *= 1.3  # a longer flash peaks in its middle
        x = img.astype(np.float32)
        h, w = img.shape[:2]
        if s.flash_kind == "gain":
            x = x * (1.0 + strength)
        elif s.flash_kind == "lift":
            x = x + strength * 0.5 * 255
        elif s.flash_kind == "gamma":
            x = 255.0 * (x / 255.0) ** (1.0 / (1.0 + 2.0 * strength))
        else:  # spot or side: a part of the frame
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            if s.flash_kind == "spot":
                cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
                r = rng.uniform(0.25, 0.45) * min(h, w)
                mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            else:
                ramp = [xx / w, 1 - xx / w, yy / h, 1 - yy / h][int(rng.integers(4))]
                mask = np.clip(1.5 * ramp - 0.5, 0, 1)
            x = x + (strength * 255) * mask[..., None]
        return np.clip(x, 0, 255).astype(np.uint8)


def _bounce(x: float, size: int) -> float:
    """Position of a point bouncing between 0 and size."""
    period = 2 * size
    x = x % period
    return x if x < size else period - x


def _make_canvas(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A scene: a low-frequency colour field around a random base colour, mid-frequency texture and
    a few solid shapes (edges), so shots differ in colour, layout and luma."""
    base = rng.uniform(30, 225, 3)
    field_ = cv2.resize(rng.uniform(-70, 70, (4, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    detail = cv2.resize(rng.standard_normal((max(h // 6, 2), max(w // 6, 2))).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    img = base[None, None, :] + field_ + detail[..., None] * 22
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(6, 12))):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(max(3, min(h, w) // 16), max(6, min(h, w) // 4)))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + size, y0 + int(size * rng.uniform(0.5, 2))), col, -1)
        else:
            cv2.circle(img, (x0, y0), size // 2, col, -1, lineType=cv2.LINE_AA)
    return np.ascontiguousarray(img)


def render_frames(shots: Sequence[Shot], transitions: Sequence[Transition], width: int = 160,
                  height: int = 96, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield every frame (H, W, 3) uint8 RGB of the video the shots and transitions describe."""
    layout(shots, transitions)  # validates counts
    lens = [0] + [t.length for t in transitions] + [0]
    # shot i's clock starts at the first frame of the transition before it and runs through the next
    renderers = [_ShotRenderer(shot, width, height, lens[i], lens[i + 1], seed) for i, shot in enumerate(shots)]
    for i, (shot, r) in enumerate(zip(shots, renderers)):
        for t in range(lens[i], lens[i] + shot.num_frames):
            yield r.frame(t)
        if lens[i + 1]:
            yield from _transition(r, renderers[i + 1], lens[i] + shot.num_frames, transitions[i])


def _transition(a: _ShotRenderer, b: _ShotRenderer, a_t0: int, tr: Transition) -> Iterator[np.ndarray]:
    n = tr.length
    for k in range(n):
        fa = a.frame(a_t0 + k).astype(np.float32)
        fb = b.frame(k).astype(np.float32)
        if tr.kind == "dissolve":
            alpha = (k + 1) / (n + 1)
            out = fa * (1 - alpha) + fb * alpha
        else:  # fade through black: A darkens to black over the first half, B rises over the second
            x = (k + 0.5) / n
            out = fa * (1 - 2 * x) if x < 0.5 else fb * (2 * x - 1)
        yield np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25, codec: str = "libx264",
                pix_fmt: str = "yuv420p", times_s: Sequence[float] | None = None, crf: int | None = 18,
                threads: int = 1, options: dict[str, str] | None = None, preset: str | None = "veryfast") -> list[float]:
    """Encode RGB frames to `path` (container from the suffix) through the project's video writer
    (dataload.h264), atomically.

    `times_s` gives explicit presentation times in seconds (variable frame rate); they are written on a
    1 ms grid. `preset` is the x264/x265 preset. Returns the frame times actually written, seconds from
    the first frame.
    """
    from dataload.h264 import VideoWriter, pinned_asm

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    time_base = Fraction(1, 1000) if times_s is not None else 1 / rate
    opts = dict(options or {})
    if crf is not None and codec in ("libx264", "libx265", "libvpx-vp9", "libvpx"):
        opts.setdefault("crf", str(crf))
        if codec.startswith("libvpx"):
            opts.setdefault("b", "0")
    if codec in ("libx264", "libx265"):
        opts.setdefault("threads", str(threads))
        if preset:  # veryfast: ~4x quicker than the default and still with B-frames
            opts.setdefault("preset", preset)
    if codec == "libx264":
        asm = pinned_asm()  # the same bytes for the same frames (see dataload.h264)
        if asm and "x264-params" not in opts:
            opts["x264-params"] = f"asm={asm}"
    written: list[float] = []
    with VideoWriter(path, codec=codec, rate=rate, time_base=time_base, options=opts, pix_fmt=pix_fmt,
                     threads=threads, stream_time_base=True) as out:
        for i, arr in enumerate(frames):
            pts = i if times_s is None else int(round(times_s[i] * 1000))
            out.write_pts(pts, arr)
            written.append(float(pts * time_base))
    if path.suffix.lower() in (".mkv", ".webm"):
        written = [round(t, 3) for t in written]  # Matroska stores milliseconds
    return [t - written[0] for t in written]


def vfr_times(num_frames: int, fps: float, seed: int = 0, spread: float = 0.5) -> list[float]:
    """Increasing frame times (ms grid) whose durations vary by +-spread around 1/fps."""
    rng = np.random.default_rng(seed)
    durations = np.round(1000 / fps * rng.uniform(1 - spread, 1 + spread, num_frames)).astype(int)
    durations = np.maximum(durations, 1)
    return [float(x) / 1000 for x in np.concatenate([[0], np.cumsum(durations[:-1])])]


def make_video(path: str | os.PathLike, shots: Sequence[Shot], transitions: Sequence[Transition] | None = None,
               width: int = 160, height: int = 96, fps: float = 25, vfr: bool = False, seed: int = 0,
               codec: str = "libx264", crf: int | None = 18) -> VideoTruth:
    """Render and encode a video; return its exact ground truth."""
    if transitions is None:
        transitions = [Transition("cut")] * max(len(shots) - 1, 0)
    shot_spans, bounds, kinds, flashes = layout(shots, transitions)
    n = total_frames(shots, transitions)
    times = vfr_times(n, fps, seed) if vfr else None
    written = write_video(path, render_frames(shots, transitions, width, height, seed), fps=fps, codec=codec,
                          times_s=times, crf=crf)
    return VideoTruth(num_frames=n, fps=float(fps) if not vfr else (n - 1) / written[-1] if n > 1 else float(fps),
                      width=width, height=height, cuts=[e for _, e in bounds],
                      transitions=[b for b, k in zip(bounds, kinds) if k != "cut"], frame_times=written,
                      shots=shot_spans, kinds=kinds, boundaries=bounds, flashes=flashes, variable_frame_rate=vfr)


def random_shots(num_shots: int, seed: int, min_frames: int = 20, max_frames: int = 60,
                 kinds: Sequence[str] = ("texture", "objects", "pan", "zoom", "static", "shake"),
                 transition_kinds: Sequence[str] = ("cut", "cut", "fade", "dissolve"),
                 transition_lengths: tuple[int, int] = (6, 16)) -> tuple[list[Shot], list[Transition]]:
    """A seeded, varied shot list (for demos and quick tests)."""
    rng = np.random.default_rng(seed)
    shots = [Shot(kind=str(rng.choice(kinds)), num_frames=int(rng.integers(min_frames, max_frames + 1)),
                  seed=int(rng.integers(0, 2**31))) for _ in range(num_shots)]
    transitions = []
    for _ in range(num_shots - 1):
        k = str(rng.choice(transition_kinds))
        transitions.append(Transition(k, 0 if k == "cut" else int(rng.integers(*transition_lengths))))
    return shots, transitions


def write_srt(path: str | os.PathLike, cues: Sequence[tuple[float, float, str]]) -> None:
    """Write SubRip cues (start_s, end_s, text), atomically."""
    def ts(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    body = "".join(f"{i}\n{ts(a)} --> {ts(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))
    atomic_write_text(path, body)


def write_vtt(path: str | os.PathLike, cues: Sequence[tuple[float, float, str]]) -> None:
    """Write WebVTT cues (start_s, end_s, text), atomically."""
    def ts(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
    body = "WEBVTT\n\n" + "".join(f"{ts(a)} --> {ts(b)}\n{text}\n\n" for a, b, text in cues)
    atomic_write_text(path, body)
