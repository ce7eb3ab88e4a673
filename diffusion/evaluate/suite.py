"""Evaluation suites: which prompts to generate, with which seeds, and what each should show.

`shapes` (the default) covers the shapes world of `dataload.shapes_world` evenly: one prompt per
(colour, direction) pair seen in training and three per held-out pair (one per shape), shapes and
backgrounds cycled so each appears about equally; `seeds` seeds per prompt. A prompts file gives its own
list: one caption per line, or JSON lines {"prompt": ..., "seeds": [...], "heldout": true|false}; a
caption that is not one of the world's is refused (its attributes would be unknown). Whether a prompt
is held out comes from the world's split unless the line says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dataload.shapes_world import Scene, ShapesWorld
from diffusion.errors import UserError

SUITES = ("shapes",)


@dataclass
class EvalPrompt:
    prompt: str
    scene: Scene
    heldout: bool
    seeds: list[int] = field(default_factory=lambda: [0])


def shapes_suite(world: ShapesWorld | None = None, seeds: int = 2) -> list[EvalPrompt]:
    world = world or ShapesWorld()
    shapes, bgs = world.shapes, tuple(world.backgrounds)
    out: list[EvalPrompt] = []
    k = 0
    for color in world.colors:
        for direction in world.directions:
            if (color, direction) in world.heldout:
                continue
            scene = Scene(color, shapes[k % len(shapes)], direction, bgs[(k // len(shapes)) % len(bgs)])
            out.append(EvalPrompt(world.caption(scene), scene, False, list(range(seeds))))
            k += 1
    for j, (color, direction) in enumerate(world.heldout):
        for i, shape in enumerate(shapes):
            scene = Scene(color, shape, direction, bgs[(i + j) % len(bgs)])
            out.append(EvalPrompt(world.caption(scene), scene, True, list(range(seeds))))
    return out


def load_prompts(path: str | Path, world: ShapesWorld | None = None, seeds: int = 2) -> list[EvalPrompt]:
    """A prompts file: captions (one a line) or JSON lines; blank lines and lines starting with # skipped."""
    world = world or ShapesWorld()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--prompts {path}: not a text file") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = {"prompt": line}
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"--prompts {path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
                raise UserError(f"--prompts {path}:{n}: a JSON line needs a \"prompt\" string")
        scene = world.parse(entry["prompt"])
        if scene is None:
            raise UserError(f"--prompts {path}:{n}: {entry['prompt']!r} is not a caption of the shapes world "
                            "(\"a COLOUR SHAPE moves DIRECTION on a BACKGROUND background\")")
        s = entry.get("seeds", list(range(seeds)))
        if not (isinstance(s, list) and s and all(isinstance(x, int) and x >= 0 for x in s)):
            raise UserError(f"--prompts {path}:{n}: \"seeds\" must be a list of integers >= 0")
        heldout = entry.get("heldout", world.is_heldout(scene))
        if not isinstance(heldout, bool):
            raise UserError(f"--prompts {path}:{n}: \"heldout\" must be true or false")
        out.append(EvalPrompt(world.caption(scene), scene, heldout, s))
    if not out:
        raise UserError(f"--prompts {path}: no prompts in the file")
    return out
