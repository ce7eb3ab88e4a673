"""The shapes world: captions say everything, the held-out split is really held out, rendering is exact."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from curate.stages.caption.timed_text import parse_timed_text
from dataload.shapes_world import DIRECTIONS, Scene, ShapesWorld, plan_corpus, write_corpus


def test_captions_round_trip_and_the_split_is_a_partition():
    world = ShapesWorld()
    scenes = world.scenes("all")
    assert len(scenes) == len(world.colors) * len(world.shapes) * len(world.directions) * len(world.backgrounds)
    captions = [world.caption(s) for s in scenes]
    assert len(set(captions)) == len(captions)
    assert all(world.parse(c) == s for c, s in zip(captions, scenes))
    assert world.parse("a purple circle moves up on a black background") is None
    assert world.parse("A  Red circle moves to the left on a dark blue background") == Scene(
        "red", "circle", "left", "dark blue")
    train, held = world.scenes("train"), world.scenes("heldout")
    assert set(train) | set(held) == set(scenes) and not set(train) & set(held)
    assert {(s.color, s.direction) for s in held} == set(world.heldout)
    # every colour and every direction is still seen in training, with every shape and background
    for attr in ("color", "direction", "shape", "background"):
        assert {getattr(s, attr) for s in train} == {getattr(s, attr) for s in scenes}


def test_rendering_is_deterministic_and_the_object_moves_as_captioned():
    world = ShapesWorld()
    for scene in world.scenes("all")[::7]:
        a, truth = world.render(scene, seed=3)
        b, _ = world.render(scene, seed=3)
        assert a.shape == (world.shot_frames, world.height, world.width, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        c = np.array(truth["centres"])
        step = np.diff(c, axis=0)
        assert np.allclose(step, np.array(DIRECTIONS[scene.direction]) * world.step(), atol=1e-6)
        hx, hy = world.half_extent(scene.shape)
        assert c[:, 0].min() - hx >= 0 and c[:, 0].max() + hx <= world.width
        assert c[:, 1].min() - hy >= 0 and c[:, 1].max() + hy <= world.height
        # the background is the named colour; the object's colour is there too
        assert tuple(a[0, 0, 0]) == world.backgrounds[scene.background]
        assert np.any(np.all(a[0] == world.colors[scene.color], axis=-1))


def test_a_world_that_cannot_hold_its_motion_is_refused():
    with pytest.raises(ValueError, match="leave the frame"):
        ShapesWorld(speed=0.1)
    with pytest.raises(ValueError, match="held-out pair"):
        ShapesWorld(heldout=(("purple", "left"),))


def test_the_corpus_never_shows_a_held_out_combination(tmp_path):
    world = ShapesWorld(colors={"red": (225, 45, 45), "blue": (60, 110, 245)}, shapes=("circle", "square"),
                        directions=("left", "up"), backgrounds={"black": (12, 12, 12), "dark gray": (64, 64, 64)},
                        heldout=(("red", "left"),))
    plan = plan_corpus(world, repeats=2, shots_per_video=4, seed=1)
    for video in plan:
        for a, b in zip(video, video[1:]):
            assert a[0].background != b[0].background  # every shot change is a visible cut
    # ... and in the demo's world the object jumps at (nearly) every one: the layout changes too
    demo = ShapesWorld()
    jumps = [float(np.hypot(*(demo.trajectory(b[0], b[1], demo.shot_frames)[0]
                              - demo.trajectory(a[0], a[1], demo.shot_frames)[-1])))
             for video in plan_corpus(demo, repeats=2) for a, b in zip(video, video[1:])]
    assert sum(j < demo.diameter() for j in jumps) <= 2 and len(jumps) > 150
    manifest = write_corpus(tmp_path, world, repeats=2, shots_per_video=4, seed=1)
    shots = manifest["shots"]
    assert len(shots) == 2 * len(world.scenes("train"))
    assert not any(s["heldout"] for s in shots)
    assert all((s["color"], s["direction"]) != ("red", "left") for s in shots)
    assert json.loads((tmp_path / "corpus.json").read_text())["shots"] == shots
    for video in sorted(tmp_path.glob("*.mp4")):
        cues = parse_timed_text(video.with_suffix(".srt").read_text())
        mine = [s for s in shots if s["video"] == video.name]
        assert [c.text for c in cues] == [s["caption"] for s in mine]
        with av.open(str(video)) as c:
            frames = sum(1 for _ in c.decode(video=0))
        assert frames == len(mine) * world.shot_frames + (len(mine) - 1) * manifest["separator_frames"]
        # a cue covers its own shot only
        for cue, shot in zip(cues, mine):
            assert cue.start_s <= shot["start_frame"] / world.fps < cue.end_s
            assert cue.end_s < shot["end_frame"] / world.fps
