"""The run's source order: big files first, the tail by the pixels the headers declare (estimated on the
workers), and the plain size order whenever estimating fails."""

from __future__ import annotations

import os

import pytest

from curate.executors.local import LocalExecutor
from curate.schedule import order_by_cost
from curate.stages.probe.cost import header_cost
from dataload.synthetic import Shot, make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched")
    # few large frames of a still shot (a small file) against many small frames of a busy one (a bigger file)
    big_frames = root / "big_frames.mp4"
    make_video(big_frames, [Shot("static", 12, seed=1)], width=640, height=360, crf=40)
    many_small = root / "many_small.mp4"
    make_video(many_small, [Shot("pan", 90, seed=2)], width=96, height=64, crf=10)
    garbage = root / "garbage.mp4"
    garbage.write_bytes(os.urandom(5000))
    return {"big_frames": str(big_frames), "many_small": str(many_small), "garbage": str(garbage), "root": root}


def test_header_cost_is_frames_times_pixels(videos, tmp_path):
    assert header_cost(videos["big_frames"]) == 12 * 640 * 360
    assert header_cost(videos["many_small"]) == 90 * 96 * 64
    assert header_cost(videos["garbage"]) is None
    assert header_cost(str(tmp_path / "missing.mp4")) is None
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    assert header_cost(str(fifo)) is None  # refused without being opened (opening would block)


def test_tail_is_ordered_by_estimated_cost_on_the_workers(videos):
    items = [(name, os.path.getsize(videos[name])) for name in ("big_frames", "many_small", "garbage")]
    assert items[0][1] < items[1][1]  # the expensive one is the smaller file
    ex = LocalExecutor(workers=2)
    try:
        order = order_by_cost(items, lambda r: r[1], lambda r: videos[r[0]], ex)
    finally:
        ex.close()
    assert order[0][0] == "big_frames"
    assert sorted(order) == sorted(items)  # every source once, the unreadable one costed by its size


class _FailingRunner:
    workers = 2

    def map(self, fn, items):
        raise RuntimeError("a worker died")


def test_estimating_never_stops_a_run(videos):
    items = [("a", 10), ("b", 30), ("c", 20)]
    assert order_by_cost(items, lambda r: r[1], lambda r: None, _FailingRunner()) == [("b", 30), ("c", 20), ("a", 10)]
