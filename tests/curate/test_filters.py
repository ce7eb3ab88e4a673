"""Each filter on synthetic clips made to trip it (and a good clip that trips none)."""

from __future__ import annotations

import numpy as np
import pytest

from curate.stages.filters import scores
from curate.stages.filters.config import FilterConfig
from curate.stages.filters.stage import FilterStage
from curate.task import Clip, SourceTask
from dataload.synthetic import Shot, make_video, write_video

CASES = {
    "good": (Shot("pan", 40, seed=3), None),
    "objects": (Shot("objects", 40, seed=6), None),
    "static": (Shot("static", 40, seed=2), "static"),
    "grain": (Shot("texture", 40, seed=1), "static"),  # a still picture with film grain is still static
    "blurred": (Shot("pan", 40, seed=8, blur=3.0), "blurry"),
    "dark": (Shot("pan", 40, seed=9, brightness=0.05), "dark"),
    "shaky": (Shot("shake", 40, seed=5), "jittery"),
}


@pytest.fixture(scope="session")
def filter_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    paths = {}
    for name, (shot, _) in CASES.items():
        paths[name] = str(root / f"{name}.mp4")
        make_video(paths[name], [shot], [], width=160, height=96)
    # washed out: nearly white frames with a moving texture
    rng = np.random.default_rng(0)
    base = rng.integers(235, 256, (96, 400, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(base[:, 2 * t:2 * t + 160]) for t in range(40)]
    paths["white"] = str(root / "white.mp4")
    write_video(paths["white"], frames, fps=25)
    return paths


def _scored(path: str, cfg: FilterConfig | None = None, n: int = 40) -> Clip:
    stage = FilterStage(cfg or FilterConfig())
    stage.setup()
    task = SourceTask(index=0, source=path, key="k", local_path=path, width=160, height=96)
    task.clips = [Clip("c", path, 0.0, n / 25, 0, n, n, 25.0, 160, 96)]
    stage.process([task])
    assert task.status == "pending", task.reason
    return task.clips[0]


@pytest.mark.parametrize("name", list(CASES) + ["white"])
def test_filter_verdicts(filter_videos, name):
    expected = CASES[name][1] if name in CASES else "bright"
    clip = _scored(filter_videos[name])
    assert clip.reject_reason == expected, (name, clip)
    for value in (clip.motion, clip.sharpness, clip.brightness, clip.jitter):
        assert value is not None and np.isfinite(value)


def test_scores_order_as_expected(filter_videos):
    good, blurred = _scored(filter_videos["good"]), _scored(filter_videos["blurred"])
    static, dark = _scored(filter_videos["static"]), _scored(filter_videos["dark"])
    shaky = _scored(filter_videos["shaky"])
    assert blurred.sharpness < 0.5 * good.sharpness
    assert static.motion < 0.05 < good.motion
    assert dark.brightness < 0.05 < good.brightness
    assert shaky.jitter > 10 * good.jitter


def test_thresholds_come_from_config(filter_videos):
    # the same static clip passes when the motion rule is switched off
    clip = _scored(filter_videos["static"], FilterConfig(min_motion=0.0))
    assert clip.status != "rejected"


def test_duration_and_size_bounds(filter_videos):
    stage = FilterStage(FilterConfig(min_clip_s=1.0, max_clip_s=1.5, min_width=200))
    stage.setup()
    path = filter_videos["good"]
    task = SourceTask(index=0, source=path, key="k", local_path=path, width=160, height=96)
    task.clips = [Clip("a", path, 0.0, 0.5, 0, 12, 12, 25.0, 160, 96),
                  Clip("b", path, 0.0, 1.6, 0, 40, 40, 25.0, 160, 96),
                  Clip("c", path, 0.0, 1.2, 0, 30, 30, 25.0, 160, 96)]
    stage.process([task])
    assert [c.reject_reason for c in task.clips] == ["too_short", "too_long", "too_small"]
    assert all(c.motion is None for c in task.clips)  # bounds are checked before any decoding


def test_sampling_helpers():
    assert scores.sample_triplets(10, 11, 4) == []
    assert scores.sample_triplets(0, 2, 4) == [[0, 1]]
    trips = scores.sample_triplets(0, 100, 5)
    assert len(trips) == 5 and trips[0] == [0, 1, 2] and trips[-1] == [97, 98, 99]
    assert scores.sample_even(0, 9, 3) == [1, 4, 7]
    assert scores.analysis_size(1280, 720, 96) == (96, 170)
    assert scores.analysis_size(160, 90, 240) == (90, 160)  # never upscales
    flat = np.full((3, 32, 32), 128, np.uint8)
    assert scores.sharpness(flat) == 0.0
    assert scores.brightness(flat) == pytest.approx(128 / 255)


def test_scores_do_not_depend_on_what_the_worker_scored_before(filter_videos, tmp_path):
    """One DIS optical-flow object per frame size: a worker that scored clips of another size first gives
    a clip the same scores as a fresh one."""
    big = tmp_path / "big.mp4"
    make_video(big, [Shot("pan", 30, seed=11)], [], width=320, height=180)
    fresh = _scored(filter_videos["shaky"])
    stage = FilterStage(FilterConfig())
    stage.setup()
    for path, (w, h), n in [(str(big), (320, 180), 30), (filter_videos["shaky"], (160, 96), 40)]:
        task = SourceTask(index=0, source=path, key="k", local_path=path, width=w, height=h)
        task.clips = [Clip("c", path, 0.0, n / 25, 0, n, n, 25.0, w, h)]
        stage.process([task])
    assert (task.clips[0].motion, task.clips[0].jitter) == (fresh.motion, fresh.jitter)


def test_a_filter_is_one_small_class_recorded_by_the_base():
    from typing import ClassVar

    from curate.filter import ClipFilter
    from curate.stages.filters.rules import FILTERS

    class Portrait(ClipFilter):  # what adding a rule takes: its reason, its keep rule (and a config field)
        reason: ClassVar[str] = "too_small"

        def keep(self, clip) -> bool:
            return clip.width >= clip.height

    tall, wide = Clip("a", "v", 0.0, 2.0, 0, 50, 50, 25.0, 90, 160), Clip("b", "v", 0.0, 2.0, 0, 50, 50, 25.0, 160, 90)
    assert Portrait()(tall) is False and (tall.status, tall.reject_reason) == ("rejected", "too_small")
    assert Portrait()(wide) is True and wide.status == "candidate"
    tall.reject("dark")
    assert tall.reject_reason == "too_small"  # the first reason stays
    with pytest.raises(TypeError, match="REJECT_REASONS"):
        type("Bad", (ClipFilter,), {"reason": "no_such_reason"})
    assert [f.reason for f in FILTERS] == ["too_short", "too_long", "too_small", "dark", "bright", "static",
                                          "jittery", "blurry"]


@pytest.mark.parametrize("preview", ["real", "always", "never"])
def test_encoding_during_the_filter_pass_never_changes_an_output(filter_videos, tmp_path, preview, monkeypatch):
    """The filter stage encodes the clips it expects to keep while it decodes them; whatever the preview
    expects (right or wrong), the verdicts and the clip bytes equal those of filtering, then transcoding."""
    from curate.stages.filters import stage as filter_stage
    from curate.stages.transcode.config import TranscodeConfig
    from curate.stages.transcode.encode import ClipEncoder
    from curate.stages.transcode.stage import TranscodeStage

    if preview != "real":
        monkeypatch.setattr(filter_stage, "likely_kept", lambda *a: preview == "always")

    def run(encoder, work):
        work.mkdir()
        out = {}
        for name in ("good", "static", "blurred"):
            path = filter_videos[name]
            task = SourceTask(index=0, source=path, key="k", local_path=path, width=160, height=96, work_dir=str(work))
            task.clips = [Clip(name, path, 0.0, 1.6, 0, 40, 40, 25.0, 160, 96)]
            for stage in (FilterStage(FilterConfig(), encoder=encoder), TranscodeStage(TranscodeConfig())):
                stage.process([task])
            clip = task.clips[0]
            out[name] = (clip.reject_reason, (work / clip.media).read_bytes() if clip.media else None)
        kept = [n for n, v in out.items() if v[1]]  # each with its mp4 and its thumbnail, nothing else
        assert sorted(p.name for p in work.iterdir()) == sorted([f"{n}.mp4" for n in kept] + [f"{n}.thumb.png" for n in kept])
        return out

    fused = run(ClipEncoder(TranscodeConfig()), tmp_path / "fused")
    apart = run(None, tmp_path / "apart")
    assert fused == apart and fused["good"][1] and fused["static"] == ("static", None)
