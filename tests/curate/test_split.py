"""Shot splitting: the content detector on the frozen synthetic set and real videos, clip planning."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.split import match
from benchmarks.split_data import make_synthetic_set
from curate.stages.split.config import SplitConfig
from curate.stages.split.detector import SceneDetector, fixed_cuts
from curate.stages.split.plan import plan_clips
from curate.stages.split.result import SceneResult, scenes_from_cuts
from dataload.synthetic import Shot, Transition, make_video


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split_set")
    items = make_synthetic_set(folder)
    det = SceneDetector(SplitConfig(splitter="content"))
    return [(path, truth, det(path)) for path, truth in items]


def test_content_detector_quality_on_synthetic_set(synth_set):
    tp = fp = fn = hard_found = hard_total = 0
    for path, truth, res in synth_set:
        assert res.num_frames == truth.num_frames
        np.testing.assert_allclose(res.frame_times, truth.frame_times, atol=1e-6)
        got = match(res.cuts, truth.boundaries)
        t = sum(g is not None for g in got)
        tp, fp, fn = tp + t, fp + len(res.cuts) - t, fn + len(truth.cuts) - t
        hard_found += sum(g is not None for g, k in zip(got, truth.kinds) if k == "cut")
        hard_total += truth.kinds.count("cut")
        # flashes are never cuts
        for f in truth.flashes:
            assert not any(abs(c - f) <= 1 for c in res.cuts if not any(s - 2 <= c <= e + 2
                                                                       for s, e in truth.boundaries)), path
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.97, (tp, fp, fn)
    assert hard_found == hard_total
    assert fp <= 1


def _flash_videos(folder, seed: int):
    """Four shots (still and moving) joined by a cut, a fade and a dissolve in random order, twice: with
    flashes of random kinds, lengths, strengths and places, and without. Unlike the benchmark's frozen set
    (another size, other seeds)."""
    import dataclasses

    from dataload.synthetic import FLASH_KINDS

    rng = np.random.default_rng(seed)
    shots = []
    for _ in range(4):
        kind = str(rng.choice(["static", "texture", "objects", "pan", "zoom", "shake"]))
        n, length = int(rng.integers(45, 65)), int(rng.integers(1, 4))
        starts = (int(rng.integers(6, 20)), int(rng.integers(28, n - 10)))
        motion = {"speed": float(rng.uniform(1, 8)), "direction": float(rng.uniform(0, 360))} if kind == "pan" else {}
        shots.append(Shot(kind, n, seed=int(rng.integers(1 << 20)), flash_at=starts, flash_len=length,
                          flash_kind=str(rng.choice(FLASH_KINDS)), flash_strength=float(rng.uniform(0.3, 1.0)),
                          **motion))
    joins = [Transition("cut"), Transition("fade", int(rng.integers(8, 14))),
             Transition("dissolve", int(rng.integers(8, 14)))]
    joins = [joins[i] for i in rng.permutation(3)]
    flashed = make_video(folder / "flashed.mp4", shots, joins, width=240, height=136, seed=seed)
    make_video(folder / "plain.mp4", [dataclasses.replace(s, flash_at=()) for s in shots], joins, width=240,
               height=136, seed=seed)
    return flashed


@pytest.mark.parametrize("seed", [101, 103])
def test_flashes_of_any_kind_change_no_boundary(tmp_path, seed):
    """Brief brightenings (whole picture or part of it, 1-3 frames, over still and moving shots) leave the
    cuts and transitions exactly as they are without them, and no cut lands on a flash."""
    truth = _flash_videos(tmp_path, seed)
    det = SceneDetector(SplitConfig(splitter="content"))
    flashed, plain = det(tmp_path / "flashed.mp4"), det(tmp_path / "plain.mp4")
    assert (flashed.cuts, flashed.transitions) == (plain.cuts, plain.transitions), truth.flashes
    assert sum(g is not None for g in match(flashed.cuts, truth.boundaries)) >= 2  # it does find boundaries


def test_fades_and_dissolves_reported_as_transitions(synth_set):
    for path, truth, res in synth_set:
        if path.stem not in ("synth_fades", "synth_dissolves"):
            continue
        assert len(res.transitions) == len(truth.transitions)
        for (ps, pe), (ts, te) in zip(res.transitions, truth.transitions):
            # the cut (the end) within the F1 tolerance; where a dissolve between two moving shots
            # begins is less sharp
            assert abs(ps - ts) <= 3 and abs(pe - te) <= 2
            assert pe in res.cuts


@pytest.mark.parametrize("trim", [0, 3])
def test_planned_clips_avoid_detected_transitions_and_keep_margin(synth_set, trim):
    cfg = SplitConfig(splitter="content", min_clip_s=0.4, max_clip_s=1.0, trim_frames=trim)
    total = 0
    for path, _truth, res in synth_set:
        clips = plan_clips(res, cfg)
        total += len(clips)
        assert clips == sorted(clips)
        for (_, e), (s2, _) in zip(clips, clips[1:]):
            assert e <= s2
        for s, e in clips:
            dur = res.time_of(e) - res.time_of(s)
            assert cfg.min_clip_s - 1e-6 <= dur <= cfg.max_clip_s + 1e-6
            for ts, te in res.transitions:  # no frame of a transition, `trim` frames clear of it
                assert e <= ts - trim or s >= te + trim, (path, (s, e), (ts, te))
            for c in res.cuts:  # never across a cut, `trim` frames clear of it
                assert e <= c - trim or s >= c + trim, (path, (s, e), c)
    assert total > 30


def test_plan_clips_pieces_and_bounds():
    times = np.arange(300) / 25.0
    res = SceneResult(num_frames=300, fps=25.0, cuts=[20, 120], transitions=[(100, 120)],
                      scenes=scenes_from_cuts(300, [20, 120], [(100, 120)]), frame_times=times)
    assert res.scenes == [(0, 20), (20, 100), (120, 300)]
    clips = plan_clips(res, SplitConfig(min_clip_s=1.0, max_clip_s=3.0, trim_frames=2))
    # (0, 18) is 0.72 s: dropped; (22, 98) 3.04 s -> two pieces; (122, 300) 7.12 s -> three pieces
    assert clips == [(22, 60), (60, 98), (122, 181), (181, 241), (241, 300)]
    # variable frame rate: pieces split by time, not by frame count
    vfr = np.concatenate([np.arange(100) * 0.02, 2.0 + np.arange(100) * 0.06])
    r2 = SceneResult(num_frames=200, fps=200 / 8.06, cuts=[], transitions=[], scenes=[(0, 200)], frame_times=vfr)
    (a, b), (c, d) = plan_clips(r2, SplitConfig(min_clip_s=1.0, max_clip_s=4.5, trim_frames=2))
    assert a == 0 and d == 200 and b == c
    assert abs(r2.time_of(b) - 8.06 / 2) < 0.06


def test_fixed_splitter(tmp_path):
    times = np.arange(0, 10, 0.04)
    assert fixed_cuts(times, 3.0) == [75, 150, 225]
    truth = make_video(tmp_path / "f.mp4", [Shot("pan", 60, 1), Shot("texture", 40, 2)], [Transition("cut")],
                       width=96, height=64, fps=25)
    res = SceneDetector(SplitConfig(splitter="fixed", fixed_stride_s=1.0, min_clip_s=0.5, max_clip_s=5,
                                    trim_frames=4))(tmp_path / "f.mp4")
    assert res.num_frames == truth.num_frames == 100
    assert res.cuts == [25, 50, 75] and res.transitions == []
    assert plan_clips(res, SplitConfig(min_clip_s=0.5, max_clip_s=5, trim_frames=4)) == res.scenes  # no trim


def test_config_validation():
    from curate.config import load_config
    from curate.errors import CurateError

    with pytest.raises(CurateError, match="auto, content, transnetv2 or fixed"):
        load_config(None, ["split.splitter=magic"])
    with pytest.raises(CurateError, match="min_clip_s"):
        load_config(None, ["split.min_clip_s=5", "split.max_clip_s=2"])
    with pytest.raises(CurateError, match="min_clip_s"):
        SceneDetector(SplitConfig(min_clip_s=5, max_clip_s=2))


@pytest.mark.real_videos
def test_real_videos(real_videos_dir, ground_truth):
    det = SceneDetector(SplitConfig(splitter="content"))
    res = det(real_videos_dir / "bikes.mp4")
    truth = [c for c in ground_truth["bikes.mp4"]["shot_starts"] if c > 0]
    assert res.num_frames == 250
    assert len(res.cuts) == len(truth)
    assert all(abs(a - b) <= 1 for a, b in zip(res.cuts, truth))
    # one static shot; a handheld shot; a shaky, blurred, rotated VFR shot: no cuts in any
    for name in ("carphone_pristine.mp4", "flipping_a_pancake.mkv", "fire2.mp4"):
        assert det(real_videos_dir / name).cuts == [], name
    # corrupt input: tolerant decoding, errors counted
    bad = det(real_videos_dir / "corrupted.mp4")
    assert bad.num_frames == 49 and bad.decode_errors >= 1


def _cuts_exact_and_fast(path):
    from curate.stages.split import content
    from curate.stages.split.frames import decode_small

    return [content.detect(decode_small(path, size=(-1, 64), skip_deblock=skip).frames, SplitConfig())
            for skip in (False, True)]


def test_skipping_deblocking_keeps_the_cuts(synth_set):
    """The splitter's analysis-grade decode finds the cuts exact decoding finds; transitions may end a
    frame apart."""
    for path, _, _ in synth_set:
        (cuts_a, tr_a), (cuts_b, tr_b) = _cuts_exact_and_fast(path)
        assert len(cuts_a) == len(cuts_b) and len(tr_a) == len(tr_b), path.name
        assert all(abs(a - b) <= 1 for a, b in zip(cuts_a, cuts_b)), path.name
        assert all(abs(a - c) <= 1 and abs(b - d) <= 1 for (a, b), (c, d) in zip(tr_a, tr_b)), path.name


@pytest.mark.real_videos
def test_skipping_deblocking_keeps_the_cuts_on_real_videos(real_videos_dir):
    for name in ("bikes.mp4", "flipping_a_pancake.mkv", "nasa_13013.mp4", "fire2.mp4"):
        exact, fast = _cuts_exact_and_fast(real_videos_dir / name)
        assert exact == fast, name


def test_plan_clips_bounds_hold_on_random_vfr_scenes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(50, 400))
        times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.09, n - 1))])
        cuts = sorted({int(c) for c in rng.integers(1, n, int(rng.integers(0, 5)))})
        res = SceneResult(num_frames=n, fps=n / times[-1], cuts=cuts, transitions=[],
                          scenes=scenes_from_cuts(n, cuts, []), frame_times=times)
        cfg = SplitConfig(min_clip_s=float(rng.uniform(0.1, 1.0)), max_clip_s=float(rng.uniform(1.0, 3.0)),
                          trim_frames=int(rng.integers(0, 4)))
        for s, e in plan_clips(res, cfg):
            assert cfg.min_clip_s - 1e-9 <= res.time_of(e) - res.time_of(s) <= cfg.max_clip_s + 1e-9
            assert not any(s < c < e for c in cuts)


def test_long_video_segments_match_per_video_results(synth_set):
    from curate.stages.split import content
    from curate.stages.split.frames import decode_small

    frames = [decode_small(p, size=(-1, 64)).frames for p, _, _ in synth_set] * 2
    joined = np.concatenate(frames)
    assert len(joined) > content._SEGMENT + 2 * content._OVERLAP
    cuts, transitions = content.detect(joined, SplitConfig())
    want, want_tr, off = set(), [], 0
    for f in frames:
        c, t = content.detect(f, SplitConfig())
        want.update(x + off for x in c)
        want_tr += [(s + off, e + off) for s, e in t]
        if off:
            want.add(off)  # the junction of two videos is a hard cut
        off += len(f)
    assert cuts == sorted(want)
    assert transitions == sorted(want_tr)


def test_detect_many_equals_one_video_at_a_time_in_order(synth_set, tmp_path):
    """Several videos at once (one thread and one FFmpeg thread each) give each video's own scenes, in
    the order asked, and an unreadable entry keeps its place as its error."""
    det = SceneDetector(SplitConfig(splitter="content"))
    missing = str(tmp_path / "missing.mp4")
    paths = [str(p) for p, _, _ in synth_set]
    asked = [paths[0], missing, *paths[1:], paths[0]]
    got = list(det.detect_many(asked))
    assert [p for p, _ in got] == asked
    assert isinstance(got[1][1], OSError)
    want = {str(p): res for p, _, res in synth_set}
    for path, res in got[:1] + got[2:]:
        assert (res.cuts, res.transitions, res.num_frames) == (want[path].cuts, want[path].transitions,
                                                              want[path].num_frames), path
        np.testing.assert_array_equal(res.frame_times, want[path].frame_times)
