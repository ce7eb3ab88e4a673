"""`vfm-curate probe`: JSON agrees with the published facts of the real files; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate.cli import main
from tests.dataload.test_reader_helpers import cfr_times, write

KEYS = {"container", "codec", "width", "height", "coded_width", "coded_height", "sample_aspect_ratio", "rotation",
        "fps", "num_frames", "duration_s", "variable_frame_rate", "decode_errors", "streams"}


def probe_json(capsys, *args) -> tuple[int, dict | None, str]:
    rc = main(["probe", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 and "--json" in args else None), err


@pytest.mark.real_videos
def test_json_matches_ground_truth(real_videos_dir, ground_truth, capsys):
    gt = ground_truth
    got = {}
    for name in gt:
        rc, d, err = probe_json(capsys, real_videos_dir / name, "--json")
        assert rc == 0, err
        assert KEYS <= d.keys()
        got[name] = d
    for name in ("bikes.mp4", "carphone_pristine.mp4", "fire2.mp4", "flipping_a_pancake.mkv", "no_duration.webm"):
        assert got[name]["num_frames"] == gt[name]["frames"], name
    for name in ("bikes.mp4", "carphone_pristine.mp4", "fire2.mp4"):
        assert (got[name]["width"], got[name]["height"]) == (gt[name]["display_width"], gt[name]["display_height"])
    assert got["bikes.mp4"]["fps"] == pytest.approx(gt["bikes.mp4"]["fps"])
    c = got["carphone_pristine.mp4"]
    assert (c["coded_width"], c["coded_height"], c["sample_aspect_ratio"]) == (176, 144, "128:117")
    f = got["fire2.mp4"]
    assert f["rotation"] == 180 and f["variable_frame_rate"] is True
    assert (f["coded_width"], f["coded_height"]) == (1280, 720) and f["fps"] == pytest.approx(10.505, abs=1e-3)
    n = got["nasa_13013.mp4"]
    best = gt["nasa_13013.mp4"]["best_video_stream"]
    assert (n["width"], n["height"], n["num_frames"]) == (best["width"], best["height"], best["frames"])
    assert n["fps"] == pytest.approx(best["fps"], abs=0.01) and len(n["streams"]) == 6
    a = got["test.avi"]
    assert (a["container"], a["codec"], a["num_frames"]) == ("avi", "mpeg4", gt["test.avi"]["frames_decoded"])
    assert got["flipping_a_pancake.mkv"]["container"] == "matroska"
    k = got["corrupted.mp4"]
    assert k["num_frames"] == gt["corrupted.mp4"]["decodable_frames"] and k["decode_errors"] >= 1


@pytest.mark.real_videos
def test_strict_corrupted_fails_with_one_line(real_videos_dir, capsys):
    rc, _, err = probe_json(capsys, real_videos_dir / "corrupted.mp4", "--strict")
    assert rc != 0
    assert err.count("\n") == 1 and "corrupt video data" in err and "Traceback" not in err


def test_human_output(tmp_path, capsys):
    path = write(tmp_path / "v.mp4", cfr_times(10, 25))
    rc = main(["probe", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "frames (decoded)     10" in out and "display size         64x48" in out and "<- probed" in out


def test_bad_input_one_line(tmp_path, capsys):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n")
    for path, words in [(tmp_path / "missing.mp4", "no such file"), (tmp_path / "zero.mp4", "empty file"),
                        (tmp_path / "text.mp4", "not a readable video")]:
        rc, _, err = probe_json(capsys, path)
        assert rc == 2 and err.count("\n") == 1 and words in err, err


def test_console_script_exit_status(tmp_path):
    """The installed entry point, as a user runs it: stderr is one line, exit non-zero."""
    (tmp_path / "x.mp4").write_text("nope")
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "probe", str(tmp_path / "x.mp4")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and proc.stdout == ""
