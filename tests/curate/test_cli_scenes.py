"""`vfm-curate scenes`: JSON Lines as DESIGN.md section 3 gives, text output, bad input."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from dataload.synthetic import Shot, Transition, make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenes_cli")
    shots = [Shot("texture", 30, 1), Shot("pan", 30, 2, speed=3), Shot("objects", 30, 3), Shot("zoom", 25, 4)]
    trans = [Transition("cut"), Transition("fade", 10), Transition("dissolve", 8)]
    vfr = make_video(d / "vfr.mp4", shots, trans, width=160, height=96, fps=25, vfr=True, seed=1)
    cfr = make_video(d / "cfr.mkv", shots[:2], trans[:1], width=160, height=96, fps=30, seed=2)
    return d, vfr, cfr


def test_json_lines(videos, capsys):
    d, vfr, cfr = videos
    assert main(["scenes", "--json", "--splitter", "content", str(d / "vfr.mp4"), str(d / "cfr.mkv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    a, b = (json.loads(x) for x in lines)
    assert set(a) == {"video", "fps", "num_frames", "cuts", "transitions", "scenes"}
    assert a["video"] == str(d / "vfr.mp4") and a["num_frames"] == vfr.num_frames
    assert [c["frame"] for c in a["cuts"]] == vfr.cuts
    for c in a["cuts"]:  # times from the stream's timestamps (variable frame rate)
        assert c["time"] == pytest.approx(vfr.frame_times[c["frame"]], abs=1e-6)
    assert len(a["transitions"]) == 2
    for t, (s, e) in zip(a["transitions"], vfr.transitions):
        assert set(t) == {"start_frame", "end_frame"}
        assert abs(t["start_frame"] - s) <= 2 and abs(t["end_frame"] - e) <= 2
    scenes = a["scenes"]
    assert scenes[0]["start_frame"] == 0 and scenes[-1]["end_frame"] == vfr.num_frames
    assert scenes[0]["start_s"] == 0.0
    for s in scenes:
        assert s["start_frame"] < s["end_frame"] and s["start_s"] < s["end_s"]
        assert s["start_s"] == pytest.approx(vfr.frame_times[s["start_frame"]], abs=1e-6)
    assert a["fps"] == pytest.approx(vfr.num_frames / (vfr.frame_times[-1] + (vfr.frame_times[-1] / (vfr.num_frames - 1))),
                                     rel=0.05)
    assert [c["frame"] for c in b["cuts"]] == [30] and b["fps"] == pytest.approx(30, rel=1e-3)


def test_text_output_and_fixed(videos, capsys):
    d, vfr, _ = videos
    assert main(["scenes", str(d / "cfr.mkv")]) == 0
    out = capsys.readouterr().out
    assert "cut at frame     30" in out and "2 scenes" in out
    assert main(["scenes", "--json", "--splitter", "fixed", "--fixed-stride", "1", str(d / "vfr.mp4")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["transitions"] == [] and all(abs(c["time"] - round(c["time"])) < 0.08 for c in r["cuts"])


def test_bad_input_one_line_each(videos, tmp_path, capsys):
    d, _, _ = videos
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    rc = main(["scenes", "--json", str(tmp_path / "missing.mp4"), str(empty), str(text), str(d / "cfr.mkv")])
    cap = capsys.readouterr()
    assert rc == 2
    err = cap.err.strip().splitlines()
    assert len(err) == 3 and all(x.startswith("vfm-curate scenes: error:") for x in err)
    assert "Traceback" not in cap.err
    assert len(cap.out.strip().splitlines()) == 1  # the good video still ran


def test_scenes_and_probe_start_without_torch(tmp_path):
    """`vfm-curate --help`, `probe` and `scenes` (content splitter) never import torch (seconds of start-up)."""
    import subprocess
    import sys

    from dataload.synthetic import Shot, make_video

    video = tmp_path / "v.mp4"
    make_video(video, [Shot("pan", 4, seed=1)], [], width=64, height=36)
    for argv in (["--help"], ["probe", str(video)], ["scenes", "--splitter", "content", str(video)]):
        code = (f"import sys; from curate.cli import main\ntry: main({argv!r})\nexcept SystemExit: pass\n"
                "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'ray') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "[]", (argv, out)
