"""The "shapes world": seeded videos whose content is fully described by their caption.

One object of a named colour and shape moves in a stated direction over a plain (optionally textured)
background of a named colour, e.g. "a red circle moves to the left on a dark blue background". It is
the corpus of `make demo` and the suite of `vfm-train eval`: both sides use this one definition of the
palette, the caption grammar and the held-out split.

Held-out split: some (colour, direction) pairs never appear in the training corpus, with any shape or
background (compositional generalisation: the model saw red things and things moving left, never a red
thing moving left). The default pairs form a transversal: every colour and every direction is held out
exactly once and still seen with all the others.

Everything is a pure function of (world, scene, seed): the same arguments give the same pixels.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

# Object colours are saturated and far apart in RGB; backgrounds are dark, so every object stands out.
COLORS = {"red": (225, 45, 45), "green": (45, 200, 70), "blue": (60, 110, 245), "yellow": (240, 220, 50)}
BACKGROUNDS = {"black": (12, 12, 12), "dark blue": (20, 28, 88), "dark gray": (64, 64, 64)}
SHAPES = ("circle", "square", "triangle")
# direction -> (dx, dy) unit step in image coordinates (y grows downwards)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_PHRASE = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
HELDOUT = (("red", "left"), ("green", "right"), ("blue", "up"), ("yellow", "down"))
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and area-averaged down: anti-aliased, sub-pixel motion


@dataclass(frozen=True)
class Scene:
    """What one clip shows; its caption says all of it."""

    color: str
    shape: str
    direction: str
    background: str

    def key(self) -> tuple[str, str, str, str]:
        return (self.color, self.shape, self.direction, self.background)


@dataclass
class ShapesWorld:
    """The world's vocabulary, geometry and held-out split (defaults: the demo's world)."""

    width: int = 64
    height: int = 64
    fps: float = 8.0
    shot_frames: int = 24  # frames per shot in the corpus (curation trims 2 at each cut: >= 2 s stays)
    colors: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(COLORS))
    backgrounds: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(BACKGROUNDS))
    shapes: tuple[str, ...] = SHAPES
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    heldout: tuple[tuple[str, str], ...] = HELDOUT  # (colour, direction) pairs kept out of training
    size: float = 0.28  # circle diameter as a fraction of the shorter side (other shapes: same area)
    speed: float = 0.025  # fraction of the shorter side per frame
    texture: float = 0.0  # amplitude (0..255 levels) of a static low-frequency pattern on each background
    # how far a path may sit from the central one, as a fraction of the room there is (0: every path of a
    # direction is the same line through the middle, so the caption says everything a clip shows; 1:
    # anywhere the object stays inside)
    jitter: float = 0.0

    def __post_init__(self) -> None:
        self.colors = {k: tuple(int(c) for c in v) for k, v in self.colors.items()}
        self.backgrounds = {k: tuple(int(c) for c in v) for k, v in self.backgrounds.items()}
        self.shapes = tuple(self.shapes)
        self.directions = tuple(self.directions)
        self.heldout = tuple(tuple(p) for p in self.heldout)
        for s in self.shapes:
            if s not in SHAPES:
                raise ValueError(f"unknown shape {s!r}; expected some of {SHAPES}")
        for d in self.directions:
            if d not in DIRECTIONS:
                raise ValueError(f"unknown direction {d!r}; expected some of {tuple(DIRECTIONS)}")
        for c, d in self.heldout:
            if c not in self.colors or d not in self.directions:
                raise ValueError(f"held-out pair ({c!r}, {d!r}) is not in the world's colours and directions")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")
        if self.travel(self.shot_frames) > self.free_range():
            raise ValueError("objects would leave the frame: lower speed or shot_frames, or shrink size")

    # -- vocabulary -------------------------------------------------------------------------------
    def caption(self, scene: Scene) -> str:
        return f"a {scene.color} {scene.shape} moves {_PHRASE[scene.direction]} on a {scene.background} background"

    def vocabulary(self) -> list[str]:
        """Every word its captions use, in a fixed order (the demo's word-level text encoder)."""
        words = "a moves on background to the".split()
        for name in [*self.colors, *self.shapes, *(_PHRASE[d] for d in self.directions), *self.backgrounds]:
            words += name.split()
        return list(dict.fromkeys(words))

    def parse(self, caption: str) -> Scene | None:
        """The scene a caption of this world describes, or None when it is not one of its captions."""
        colors = "|".join(re.escape(c) for c in sorted(self.colors, key=len, reverse=True))
        bgs = "|".join(re.escape(b) for b in sorted(self.backgrounds, key=len, reverse=True))
        shapes = "|".join(self.shapes)
        dirs = "|".join(re.escape(_PHRASE[d]) for d in self.directions)
        m = re.fullmatch(rf"a ({colors}) ({shapes}) moves ({dirs}) on a ({bgs}) background",
                         " ".join(caption.strip().lower().split()))
        if m is None:
            return None
        direction = next(d for d in self.directions if _PHRASE[d] == m.group(3))
        return Scene(m.group(1), m.group(2), direction, m.group(4))

    def is_heldout(self, scene: Scene) -> bool:
        return (scene.color, scene.direction) in self.heldout

    def scenes(self, split: str = "all") -> list[Scene]:
        """Every attribute combination of a split ("train", "heldout" or "all"), in a fixed order."""
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be train, heldout or all, got {split!r}")
        out = [Scene(*k) for k in itertools.product(self.colors, self.shapes, self.directions, self.backgrounds)]
        if split == "train":
            return [s for s in out if not self.is_heldout(s)]
        if split == "heldout":
            return [s for s in out if self.is_heldout(s)]
        return out

    # -- geometry ---------------------------------------------------------------------------------
    def diameter(self) -> float:
        return self.size * min(self.width, self.height)

    def half_extent(self, shape: str) -> tuple[float, float]:
        """Half width and half height of a shape's bounding box (pixels)."""
        d = self.diameter()
        if shape == "circle":
            return d / 2, d / 2
        if shape == "square":  # same area as the circle
            return d * 0.443, d * 0.443
        return d * 0.627, d * 0.627  # triangle: base = height, same area as the circle

    def step(self) -> float:
        return self.speed * min(self.width, self.height)

    def travel(self, frames: int) -> float:
        return self.step() * (frames - 1)

    def free_range(self) -> float:
        """How far the centre of the largest shape can move along the shorter axis and stay inside."""
        h = max(self.half_extent(s)[0] for s in SHAPES)
        return min(self.width, self.height) - 2 * h - 2

    # -- rendering --------------------------------------------------------------------------------
    def trajectory(self, scene: Scene, seed: int, frames: int) -> np.ndarray:
        """(frames, 2) object centres (x, y): a straight, constant-speed path that stays inside."""
        rng = np.random.default_rng(_seed(seed, scene, "path"))
        dx, dy = DIRECTIONS[scene.direction]
        hx, hy = self.half_extent(scene.shape)
        lo = np.array([hx + 1, hy + 1])
        hi = np.array([self.width - hx - 1, self.height - hy - 1])
        travel = self.travel(frames)
        u = 0.5 + (rng.random(3) - 0.5) * self.jitter  # 0.5: the central path
        start = lo + u[:2] * (hi - lo)  # across the motion
        along = 0 if dx else 1
        sign = dx or dy
        room = hi[along] - lo[along] - travel
        first = lo[along] + u[2] * max(room, 0.0)
        start[along] = first if sign > 0 else hi[along] - (first - lo[along])
        t = np.arange(frames, dtype=np.float64)[:, None]
        return start[None, :] + t * self.step() * np.array([dx, dy], np.float64)[None, :]

    def background_image(self, scene: Scene, seed: int) -> np.ndarray:
        base = np.broadcast_to(np.array(self.backgrounds[scene.background], np.float32),
                               (self.height, self.width, 3)).copy()
        if self.texture > 0:
            # one pattern per background (a background's name says all of it); consecutive shots of a
            # corpus video differ in background, so their patterns differ and every cut is visible
            import hashlib

            key = hashlib.blake2b(f"texture:{scene.background}".encode(), digest_size=8).digest()
            rng = np.random.default_rng(int.from_bytes(key, "little"))
            low = rng.standard_normal((4, 4)).astype(np.float32)
            field_ = cv2.resize(low, (self.width, self.height), interpolation=cv2.INTER_CUBIC)
            base += field_[..., None] * self.texture
        return base

    def render(self, scene: Scene, seed: int = 0, frames: int | None = None) -> tuple[np.ndarray, dict]:
        """(T, H, W, 3) uint8 frames of a scene, and its ground truth (attributes, centres, step)."""
        frames = frames or self.shot_frames
        centres = self.trajectory(scene, seed, frames)
        bg = self.background_image(scene, seed)
        colour = np.array(self.colors[scene.color], np.float32)
        out = np.empty((frames, self.height, self.width, 3), np.uint8)
        s = _SUPERSAMPLE
        for i, (cx, cy) in enumerate(centres):
            mask = np.zeros((self.height * s, self.width * s), np.uint8)
            _draw(mask, scene.shape, cx * s, cy * s, [h * s for h in self.half_extent(scene.shape)])
            alpha = cv2.resize(mask, (self.width, self.height), interpolation=cv2.INTER_AREA)
            a = alpha.astype(np.float32)[..., None] / 255.0
            out[i] = np.clip(bg * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)
        truth = {**asdict(scene), "caption": self.caption(scene), "heldout": self.is_heldout(scene),
                 "seed": seed, "centres": centres.round(3).tolist(), "step_px": self.step()}
        return out, truth

    def to_json(self) -> dict:
        d = asdict(self)
        d["heldout"] = [list(p) for p in self.heldout]
        return d


def _seed(seed: int, scene: Scene, what: str) -> int:
    import hashlib

    text = f"{seed}:{':'.join(scene.key())}:{what}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _draw(mask: np.ndarray, shape: str, cx: float, cy: float, half: Sequence[float]) -> None:
    hx, hy = half
    if shape == "circle":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(hx)), 255, -1)
    elif shape == "square":
        cv2.rectangle(mask, (int(round(cx - hx)), int(round(cy - hy))),
                      (int(round(cx + hx)) - 1, int(round(cy + hy)) - 1), 255, -1)
    else:  # triangle pointing up
        pts = np.array([[cx, cy - hy], [cx + hx, cy + hy], [cx - hx, cy + hy]])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)


# ---------------------------------------------------------------- the corpus (videos + .srt)

@dataclass
class CorpusShot:
    video: str
    start_frame: int
    end_frame: int
    caption: str
    seed: int


def plan_corpus(world: ShapesWorld, repeats: int = 2, shots_per_video: int = 8, seed: int = 0) -> list[list[tuple[Scene, int]]]:
    """Every training combination `repeats` times, shuffled, grouped into videos; consecutive shots of a
    video never share a background and, where the pool allows, the next shot's object starts well away
    from where the last one ended, so each shot change is a visible cut (a shot detector compares the
    picture's layout, and takes a layout that comes back after the static between shots for a flash)."""
    rng = np.random.default_rng(seed)
    pool = [(s, seed * 1_000_003 + r) for r in range(repeats) for s in world.scenes("train")]
    pending = [pool[i] for i in rng.permutation(len(pool))]
    ends = {shot: world.trajectory(*shot, world.shot_frames)[[0, -1]] for shot in pool}  # first, last centre
    videos, current = [], []
    while pending:
        last = current[-1] if current else None
        other = [i for i, shot in enumerate(pending) if last is None or shot[0].background != last[0].background]
        apart = [i for i in other if last is None
                 or float(np.hypot(*(ends[pending[i]][0] - ends[last][1]))) >= world.diameter()]
        current.append(pending.pop((apart or other or [0])[0]))
        if len(current) == shots_per_video:
            videos.append(current)
            current = []
    if current:
        videos.append(current)
    return videos


def write_corpus(out: str | os.PathLike, world: ShapesWorld | None = None, repeats: int = 2,
                 shots_per_video: int = 8, seed: int = 0, separator_frames: int = 2) -> dict:
    """Write the training corpus: OUT/shapes-NNN.mp4 with an .srt beside each (one cue per shot) and
    OUT/corpus.json (the world and every shot's ground truth). Existing complete videos are kept.

    Shots are joined by `separator_frames` frames of static, like a channel change: a shot change in
    this world is otherwise one object jumping on a plain background, which a shot detector rightly
    takes for motion. The static is no one's caption; curation finds the cuts around it and drops it.
    """
    from dataload.synthetic import write_srt, write_video

    world = world or ShapesWorld()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n, gap = world.shot_frames, separator_frames
    shots: list[dict] = []
    for v, plan in enumerate(plan_corpus(world, repeats, shots_per_video, seed)):
        path = out / f"shapes-{v:03d}.mp4"
        srt = path.with_suffix(".srt")
        rendered = [world.render(scene, s) for scene, s in plan]
        starts = [i * (n + gap) for i in range(len(rendered))]
        if not (path.is_file() and srt.is_file()):
            rng = np.random.default_rng(seed * 7919 + v)
            static = [rng.integers(0, 256, (gap, world.height, world.width, 3), dtype=np.uint8)
                      for _ in rendered[1:]]
            frames = [f for i, (clip, _) in enumerate(rendered)
                      for f in ([*static[i - 1], *clip] if i else clip)]
            times = write_video(path, frames, fps=world.fps, crf=12)
            cues = [(times[a], times[a + n - 1] + 0.5 / world.fps, truth["caption"])
                    for a, (_, truth) in zip(starts, rendered)]
            write_srt(srt, cues)
        for a, (_, truth) in zip(starts, rendered):
            truth.pop("centres")
            shots.append({"video": path.name, "start_frame": a, "end_frame": a + n, **truth})
    manifest = {"world": world.to_json(), "repeats": repeats, "seed": seed, "separator_frames": gap,
                "shots": shots}
    tmp = out / ".corpus.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "corpus.json")
    return manifest


def world_from_json(data: dict) -> ShapesWorld:
    d = dict(data)
    d["colors"] = {k: tuple(v) for k, v in d.get("colors", COLORS).items()}
    d["backgrounds"] = {k: tuple(v) for k, v in d.get("backgrounds", BACKGROUNDS).items()}
    for k in ("shapes", "directions"):
        if k in d:
            d[k] = tuple(d[k])
    if "heldout" in d:
        d["heldout"] = tuple(tuple(p) for p in d["heldout"])
    return ShapesWorld(**d)


def iter_scenes(world: ShapesWorld, split: str, seeds: Sequence[int]) -> Iterator[tuple[Scene, int]]:
    for scene in world.scenes(split):
        for s in seeds:
            yield scene, s
