"""The video analyser of `vfm-train eval`, on its own: every attribute right on the world's ground-truth
videos (raw and through H.264), about chance on noise, and the direction really read from the motion."""

from __future__ import annotations

import numpy as np

from dataload.shapes_world import ShapesWorld
from diffusion.evaluate.analyse import analyse_video

ATTRS = ("color", "shape", "direction")


def _accuracy(world, videos):
    hits = {a: 0 for a in ATTRS}
    for frames, scene in videos:
        got = analyse_video(frames, world)
        for a in ATTRS:
            hits[a] += getattr(got, a) == getattr(scene, a)
    return {a: h / len(videos) for a, h in hits.items()}


def test_every_ground_truth_video_is_read_right():
    world = ShapesWorld()
    videos = [(world.render(s, seed, 16)[0], s) for s in world.scenes("all") for seed in (0, 1)]
    assert _accuracy(world, videos) == {a: 1.0 for a in ATTRS}


def test_textured_backgrounds_other_sizes_and_h264_are_read_right(tmp_path):
    from dataload.synthetic import write_video
    from diffusion.generate import read_video

    for world in (ShapesWorld(texture=12.0), ShapesWorld(width=96, height=80)):
        videos = []
        for k, scene in enumerate(world.scenes("all")[::5]):
            frames, _ = world.render(scene, k, 16)
            path = tmp_path / f"v{k}.mp4"
            write_video(path, frames, fps=8, crf=23)  # an ordinary encode, as curation does
            videos.append((read_video(path), scene))
        assert _accuracy(world, videos) == {a: 1.0 for a in ATTRS}


def test_the_measured_track_and_flicker_are_right():
    world = ShapesWorld()
    scene = world.scenes("all")[0]
    frames, truth = world.render(scene, 0, 16)
    got = analyse_video(frames, world)
    assert got.found and got.object_frames == 16
    assert abs(got.speed - world.step()) < 0.05 * world.step()
    assert got.flicker < 0.5  # a plain, steady background
    noisy = np.clip(frames.astype(np.int16) + np.random.default_rng(0).integers(-20, 21, frames.shape), 0, 255)
    assert analyse_video(noisy.astype(np.uint8), world).flicker > 5


def test_noise_scores_about_chance():
    world = ShapesWorld()
    rng = np.random.default_rng(0)
    scenes = world.scenes("all")[::3]
    # pure noise, and noise blobs on a plain background (something to segment, nothing to read)
    noise = [(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8), s) for s in scenes]
    blobs = []
    for s in scenes:
        v = np.full((16, 64, 64, 3), world.backgrounds[s.background], np.uint8)
        for t in range(16):
            y, x = rng.integers(4, 44, 2)
            v[t, y:y + 16, x:x + 16] = rng.integers(0, 256, 3)
        blobs.append((v, s))
    chance = {"color": 1 / len(world.colors), "shape": 1 / len(world.shapes), "direction": 1 / len(world.directions)}
    for videos in (noise, blobs):
        acc = _accuracy(world, videos)
        for a in ATTRS:
            assert acc[a] <= chance[a] + 0.2, (a, acc)


def test_direction_comes_from_the_frame_order():
    world = ShapesWorld()
    rng = np.random.default_rng(1)
    videos = [(world.render(s, 0, 16)[0], s) for s in world.scenes("all")[::2]]
    shuffled = [(f[rng.permutation(len(f))], s) for f, s in videos]
    reversed_ = [(f[::-1], s) for f, s in videos]
    acc = _accuracy(world, shuffled)
    assert acc["color"] == 1.0 and acc["shape"] == 1.0
    assert acc["direction"] <= 0.25 + 0.2
    assert _accuracy(world, reversed_)["direction"] == 0.0
