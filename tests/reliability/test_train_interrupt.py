"""Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) during training with one
rank and with two: exit 130, one line, no rank's traceback, and --resume continues from the last
checkpoint as if nothing happened."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.reliability.conftest import REPO, call, kill_group
from tests.reliability.train_fixtures import fit_args, losses


def _wait_for(path, lines: int, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and len(path.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.returncode}\n{proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    kill_group(proc)
    pytest.fail("training did not log in time")


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_ctrl_c_ends_training_with_one_line_and_resume_continues(nproc, curated_data, tmp_path):
    run = tmp_path / "run"
    argv = fit_args(curated_data, run, 400, "--nproc", str(nproc), "--cp", str(nproc))
    proc = subprocess.Popen([sys.executable, "-m", "diffusion.cli_train", *map(str, argv)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for(run / "metrics.jsonl", 3, proc)
        import os

        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches every process of the group
        _, err = proc.communicate(timeout=60)
    except BaseException:
        kill_group(proc)
        raise
    text = err.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text, text
    assert [line for line in text.splitlines() if line.strip()] == ["vfm-train fit: interrupted"], text
    done = sorted(losses(run))
    assert done and done == list(range(1, len(done) + 1))
    if nproc == 1:
        return
    # resume to a couple of steps past the last checkpoint (one per step here)
    target = max(done) + 2
    res = call("vfm-train", fit_args(curated_data, run, target, "--resume", "--nproc", str(nproc), "--cp", str(nproc)))
    assert res.rc == 0, res.stderr
    assert sorted(losses(run)) == list(range(1, target + 1))
