"""The frozen synthetic set of the `split` benchmark (and of the split tests): seeded videos with exact
ground truth covering hard cuts, fades through black, dissolves, fast camera motion and flashes: near-white
ones, and brief brightenings of the whole picture (gain, lift, gamma) or of part of it (a spot, a ramp from
one edge), one to three frames long, over still and moving shots, beside cuts, fades and dissolves.

Counts, seeds, lengths and transition lengths are fixed here; changing them changes the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dataload.synthetic import Shot, Transition, VideoTruth, make_video

WIDTH, HEIGHT, FPS = 320, 180, 25.0


@dataclass(frozen=True)
class SynthSpec:
    name: str
    shots: tuple[Shot, ...]
    transitions: tuple[Transition, ...]
    seed: int


def _cut() -> Transition:
    return Transition("cut")


def synthetic_specs() -> list[SynthSpec]:
    S, T = Shot, Transition
    return [
        SynthSpec("cuts", (
            S("texture", 40, 1), S("objects", 35, 2), S("pan", 50, 3, speed=3), S("zoom", 45, 4),
            S("static", 30, 5), S("shake", 40, 6), S("objects", 25, 7, blur=2.0), S("pan", 45, 8, speed=5,
                                                                                   direction=90),
            S("texture", 30, 9, brightness=0.4)),
            tuple(_cut() for _ in range(8)), 11),
        SynthSpec("fades", (
            S("texture", 40, 21), S("pan", 45, 22, speed=3), S("objects", 40, 23), S("zoom", 50, 24),
            S("static", 40, 25), S("shake", 45, 26)),
            (T("fade", 8), T("fade", 12), T("fade", 16), T("fade", 24), T("fade", 10)), 12),
        SynthSpec("dissolves", (
            S("texture", 40, 31), S("objects", 45, 32), S("pan", 40, 33, speed=3), S("zoom", 50, 34),
            S("static", 40, 35), S("objects", 45, 36), S("texture", 40, 37)),
            (T("dissolve", 6), T("dissolve", 10), T("dissolve", 14), T("dissolve", 20), T("dissolve", 8),
             T("dissolve", 12)), 13),
        SynthSpec("motion", (
            S("pan", 50, 41, speed=10), S("pan", 45, 42, speed=14, direction=180), S("zoom", 50, 43, speed=1.2),
            S("shake", 40, 44, speed=8), S("pan", 60, 45, speed=8, direction=30), S("objects", 45, 46, speed=9),
            S("pan", 50, 47, speed=12, direction=270)),
            (_cut(), T("dissolve", 10), _cut(), T("fade", 12), _cut(), T("dissolve", 14)), 14),
        SynthSpec("flashes", (
            S("texture", 50, 51, flash_at=(20,), flash_len=1), S("objects", 60, 52, flash_at=(15, 40), flash_len=2),
            S("pan", 50, 53, speed=4, flash_at=(25,), flash_len=3), S("static", 45, 54, flash_at=(10, 30)),
            S("shake", 50, 55, flash_at=(24,), flash_len=1)),
            (_cut(), T("fade", 12), _cut(), T("dissolve", 10)), 15),
        SynthSpec("mixed", (
            S("zoom", 35, 61, speed=0.8), S("texture", 25, 62, blur=3.0), S("objects", 40, 63, brightness=0.5),
            S("pan", 45, 64, speed=6, direction=135), S("static", 30, 65, brightness=0.3),
            S("shake", 35, 66, flash_at=(12,)), S("texture", 40, 67), S("pan", 40, 68, speed=2)),
            (T("dissolve", 16), _cut(), T("fade", 20), _cut(), T("dissolve", 8), T("fade", 6), _cut()), 16),
        SynthSpec("flashes_still", (
            S("static", 50, 71, flash_at=(12, 33), flash_len=1, flash_kind="gain", flash_strength=0.7),
            S("texture", 50, 72, flash_at=(20,), flash_len=2, flash_kind="spot", flash_strength=0.8),
            S("objects", 55, 73, flash_at=(10, 35), flash_len=3, flash_kind="lift", flash_strength=0.5),
            S("static", 45, 74, flash_at=(22,), flash_len=2, flash_kind="side", flash_strength=0.7),
            S("texture", 50, 75, brightness=0.5, flash_at=(15, 36), flash_len=1, flash_kind="gamma",
              flash_strength=0.6)),
            (_cut(), T("fade", 12), _cut(), T("dissolve", 10)), 17),
        SynthSpec("flashes_moving", (
            S("pan", 50, 81, speed=5, flash_at=(20,), flash_len=2, flash_kind="gain", flash_strength=0.5),
            S("zoom", 55, 82, flash_at=(12, 38), flash_len=1, flash_kind="spot", flash_strength=0.9),
            S("shake", 50, 83, flash_at=(24,), flash_len=3, flash_kind="gamma", flash_strength=0.5),
            S("objects", 50, 84, speed=5, flash_at=(15,), flash_len=2, flash_kind="side", flash_strength=0.8),
            S("pan", 55, 85, speed=9, direction=200, flash_at=(10, 36), flash_len=3, flash_kind="lift",
              flash_strength=0.4),
            S("pan", 45, 86, speed=3, direction=60, flash_at=(20,), flash_len=1, flash_kind="spot",
              flash_strength=0.6)),
            (T("dissolve", 12), _cut(), T("fade", 10), _cut(), T("dissolve", 8)), 18),
    ]


def make_synthetic_set(folder: str | Path) -> list[tuple[Path, VideoTruth]]:
    """Render the set into `folder` and return (path, truth) pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for spec in synthetic_specs():
        path = folder / f"synth_{spec.name}.mp4"
        truth = make_video(path, list(spec.shots), list(spec.transitions), width=WIDTH, height=HEIGHT, fps=FPS,
                           seed=spec.seed)
        out.append((path, truth))
    return out
