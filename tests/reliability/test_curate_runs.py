"""What the world can do to a running `vfm-curate run`: a second run on the same OUT, a stale lock, a
read-only or full OUT (in the driver and inside workers), Ctrl-C, kill -9 of the driver or of the whole
process group at different points.

Outcomes: a second run exits 2 with one line naming the holder and touches nothing; OUT that cannot be
written exits 2 with the path and the cause, leaves no partial file, and a rerun once the cause is gone
resumes to the result of an uninterrupted run; Ctrl-C exits 130 with one line and no worker traceback;
after kill -9 no worker lives on, and a rerun equals an uninterrupted run. Real processes, real signals,
real (tiny) filesystems; every spawned command is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.curate.corpus import comparable_meta, read_shards, reliability_corpus
from tests.reliability.conftest import REPO, Outcome, assert_one_line_error, bounded, call, kill_group

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="real signals, /proc and tmpfs: Linux")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return reliability_corpus(tmp_path_factory)


def run(*args, workers: int = 0, timeout: float = 90) -> Outcome:
    with bounded(timeout, "vfm-curate run"):
        return call("vfm-curate", ["run", *map(str, args), "--workers", str(workers)])


def popen(*args) -> subprocess.Popen:
    """`vfm-curate ARGS` in its own process group (as a terminal would run it), output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VFM_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "curate.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 90) -> Outcome:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"hung for {timeout} s; stderr:\n{err.decode(errors='replace')[-2000:]}")
    return Outcome(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def wait_for(cond, proc: subprocess.Popen | None = None, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}: "
                        f"{proc.stderr.read().decode(errors='replace')[-2000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            if proc is not None:
                kill_group(proc)
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def workers_of(pid: int) -> list[int]:
    """The worker processes of a run (multiprocessing spawn children; not its resource tracker)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
    found = []
    for k in kids:
        with contextlib.suppress(OSError), open(f"/proc/{k}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                found.append(k)
    return found


def is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_files(pid: int) -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def in_flight(out: Path) -> list[Path]:
    tmp = out / "_state" / "tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def committed(out: Path) -> int:
    src = out / "_state" / "sources"
    return len(list(src.iterdir())) if src.is_dir() else 0


def leftovers(out: Path) -> list[str]:
    """Partial files a failed write could leave: temporary names, half-built shards, work dirs."""
    bad = []
    for root, dirs, files in os.walk(out):
        for n in dirs + files:
            if n.endswith((".tmp", ".part", ".part.mp4")) or ".tmp-" in n or n in ("shards.building", "shards.old"):
                bad.append(os.path.join(root, n))
    return bad + [str(p) for p in in_flight(out)]


def hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding OUT's lock, as a run does (dataload.lock.FolderLock on OUT/_state/lock)."""
    code = ("import sys, time; from dataload.lock import FolderLock; "
            "FolderLock(sys.argv[1], '_state/lock', command='vfm-curate run').acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    assert proc.stdout.readline().strip() == b"held"
    return proc


def remount_ro(path: Path) -> None:
    res = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, timeout=20)
    if res.returncode != 0:
        pytest.skip(f"cannot remount {path} read-only: {res.stderr.decode(errors='replace').strip()}")


# ------------------------------------------------------------------ one run per OUT

@pytest.mark.parametrize("command", ["run", "report"])
def test_a_second_run_is_refused_and_touches_nothing(command, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(corpus["ref_one"], out)
    work = out / "_state" / "tmp" / "in-flight-of-the-other-run"
    work.mkdir(parents=True)
    (work / "clip.mp4.part.mp4").write_bytes(b"half")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "lock"}
    holder = hold_lock(out)
    try:
        if command == "run":
            res = run(corpus["one"], "--out", out)
        else:
            with bounded(30):
                res = call("vfm-curate", ["report", out])
        line = assert_one_line_error(res, 2, "is in use by another run", f"pid {holder.pid}")
        assert "vfm-curate run" in line
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "lock"} == before
    finally:
        kill_group(holder)
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(corpus, tmp_path):
    out = tmp_path / "out"
    holder = hold_lock(out)
    kill_group(holder)  # kill -9: no chance to clean up; the kernel drops its flock
    holder.wait()
    assert (out / "_state" / "lock").exists()
    res = run(corpus["one"], "--out", out)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(corpus["ref_one"]))


def test_two_real_runs_on_one_out(corpus, tmp_path):
    """The issue's case: the second run's clean-up deleted the first's in-flight work. Now it is refused
    and the first run ends as if alone."""
    out = tmp_path / "out"
    first = popen("run", corpus["vids"], "--out", out, "--workers", "0")
    try:
        wait_for(lambda: bool(in_flight(out)), first, what="the first run's work in flight")
        res = run(corpus["vids"], "--out", out)
        assert_one_line_error(res, 2, "in use by another run", f"pid {first.pid}")
    finally:
        done = finish(first)
    assert done.rc == 0 and done.stderr == "", done.stderr
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(corpus["ref_vids"]))


# ------------------------------------------------------------------ OUT that cannot be written

@pytest.mark.parametrize("where", ["out is read-only", "out under a read-only folder"])
def test_read_only_out_exit_2_with_path_and_cause(where, corpus, readonly_dir):
    ro = readonly_dir()
    out = ro if where == "out is read-only" else ro / "sub" / "out"
    res = run(corpus["one"], "--out", out)
    line = assert_one_line_error(res, 2, "cannot write", "Read-only file system" if os.geteuid() == 0 else "denied")
    assert str(ro) in line
    assert not list(ro.iterdir())


@pytest.mark.parametrize("command", ["run", "report"])
def test_finished_run_on_a_read_only_disk(command, corpus, small_disk):
    disk = small_disk("2m")
    out = disk / "out"
    assert run(corpus["one"], "--out", out).rc == 0
    remount_ro(disk)
    if command == "run":
        res = run(corpus["one"], "--out", out)
    else:
        with bounded(30):
            res = call("vfm-curate", ["report", out])
    assert str(out) in assert_one_line_error(res, 2, "cannot write", "Read-only file system")


@pytest.mark.parametrize("free_kib", [0, 12, 40, 80])
def test_full_disk_exit_2_then_rerun_equals_an_uninterrupted_run(free_kib, corpus, small_disk):
    disk = small_disk("1m")
    filler = disk / "filler"
    st = os.statvfs(disk)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free_kib * 1024))
    out = disk / "out"
    res = run(corpus["one"], "--out", out)
    line = assert_one_line_error(res, 2, "No space left on device")
    assert str(disk) in line, line
    assert not leftovers(out) if out.exists() else True, leftovers(out)
    filler.unlink()
    res = run(corpus["one"], "--out", out)
    assert res.rc == 0 and "Traceback" not in res.stderr, res.stderr
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(corpus["ref_one"]))
    assert not leftovers(out)


def test_full_disk_inside_a_worker(corpus, small_disk):
    """Clip files are written by worker processes: a full disk there stops the run with exit 2 and one
    line (no worker traceback on the terminal), and the rerun resumes."""
    disk = small_disk("1m")
    out = disk / "out"
    assert run(corpus["one"], "--out", out).rc == 0
    for p in out.iterdir():  # keep the run's config and lock: what a run that had not started its sources holds
        if p.name != "config.yaml":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    st = os.statvfs(disk)
    with open(disk / "filler", "wb") as f:  # one page left: a clip file needs more
        f.write(b"\0" * (st.f_bavail * st.f_frsize - 4096))
    res = finish(popen("run", corpus["one"], "--out", out, "--workers", "1"))
    assert_one_line_error(res, 2, "No space left on device", str(out))
    assert not leftovers(out)
    (disk / "filler").unlink()
    res = run(corpus["one"], "--out", out)
    assert res.rc == 0, res.stderr
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(corpus["ref_one"]))


# ------------------------------------------------------------------ Ctrl-C and kill -9

@pytest.fixture(scope="module")
def many_vids(corpus, tmp_path_factory):
    """16 copies of each of vids/{a,b,c} under their own names: a run long enough (a few seconds) that a
    Ctrl-C sent half a second after the first sources start still lands in the middle of it."""
    folder = tmp_path_factory.mktemp("many") / "vids"
    folder.mkdir()
    for src in sorted(corpus["vids"].iterdir()):
        for k in range(16):
            shutil.copy(src, folder / f"{src.stem}{k:02d}.mp4")
    ref = folder.parent / "ref"
    assert run(folder, "--out", ref, timeout=180).rc == 0
    return folder, ref


def test_ctrl_c_exits_130_with_one_line_and_the_rerun_resumes(many_vids, tmp_path):
    vids, ref = many_vids
    total = len(list(vids.iterdir()))
    out = tmp_path / "out"
    proc = popen("run", vids, "--out", out, "--workers", "2")
    try:
        wait_for(lambda: bool(in_flight(out)) and len(workers_of(proc.pid)) >= 2, proc, what="busy workers")
        workers = workers_of(proc.pid)
        lock = str(out / "_state" / "lock")
        assert lock in open_files(proc.pid)
        assert all(lock not in open_files(w) for w in workers)  # the lock is never inherited
        for w in workers:  # a worker leaves Ctrl-C to the driver: it neither dies nor prints a traceback
            os.kill(w, signal.SIGINT)
        time.sleep(0.5)
        assert all(is_alive(w) for w in workers) and proc.poll() is None
        assert committed(out) < total  # still in the middle of the run
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole process group
    finally:
        res = finish(proc)
    assert_one_line_error(res, 130, "interrupted", "rerun the same command to resume")
    assert not any(is_alive(w) for w in workers)
    assert not in_flight(out)
    n = committed(out)
    res = run(vids, "--out", out)
    assert res.rc == 0 and f"{total - n} processed now, {n} resumed" in res.stdout, (res.stdout, res.stderr)
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(ref))


def test_kill_9_of_the_driver_leaves_no_worker_behind(corpus, tmp_path):
    out = tmp_path / "out"
    proc = popen("run", corpus["vids"], "--out", out, "--workers", "2")
    try:
        wait_for(lambda: committed(out) >= 1 and len(workers_of(proc.pid)) >= 2, proc, what="a first commit")
        workers = workers_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` does
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(is_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(is_alive(w) for w in workers), "workers outlived their driver"
    finally:
        kill_group(proc)
        finish(proc)
    res = run(corpus["vids"], "--out", out)
    assert res.rc == 0 and "resumed" in res.stdout, res.stderr
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(corpus["ref_vids"]))
    assert not in_flight(out)


def test_kill_9_during_the_final_write(corpus, tmp_path):
    """Killed after the shards are swapped in but before the report: the rerun rewrites everything."""
    out = tmp_path / "out"
    proc = popen("run", corpus["vids"], "--out", out, "--workers", "0")
    try:
        wait_for(lambda: (out / "shards").is_dir() and committed(out) == 3, proc, what="the final write")
        kill_group(proc)
    finally:
        finish(proc)
    assert proc.returncode == -signal.SIGKILL
    res = run(corpus["vids"], "--out", out)
    assert res.rc == 0 and "0 processed now, 3 resumed" in res.stdout, (res.stdout, res.stderr)
    assert comparable_meta(read_shards(out)) == comparable_meta(read_shards(corpus["ref_vids"]))
    assert (out / "report.md").is_file() and not leftovers(out)
