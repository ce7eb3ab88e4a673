"""The hostile-input suite's tools: run a command bounded in time, check the error contract, a canary
that proves no code ran, and a sandbox that proves nothing was written outside OUT.

Cases call a command's `main(argv)` in this process where they can (cheap) and spawn it only where the
case needs a real process (a hang to bound, a signal, a kill -9). Every spawned command has a timeout:
a case that hangs fails as "hung", it never blocks the suite.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {"vfm-curate": "curate.cli", "vfm-train": "diffusion.cli_train", "vfm-generate": "diffusion.cli_generate"}


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def call(command: str, argv: list[str]) -> Outcome:
    """Run a command's main(argv) in this process; its exit status, stdout and stderr."""
    import importlib

    main = importlib.import_module(COMMANDS[command]).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            rc = exc.code if isinstance(exc.code, int) else 2
    return Outcome(int(rc or 0), out.getvalue(), err.getvalue())


def spawn(command: str, argv: list[str], *, timeout: float = 90, env: dict | None = None,
          cwd: str | os.PathLike | None = None) -> Outcome:
    """Run a command in a fresh process (its own process group), killed and failed as hung after `timeout`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("VFM_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", COMMANDS[command], *[os.fsdecode(a) if isinstance(a, bytes)
                                                                         else str(a) for a in argv]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd or REPO,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"{command} {' '.join(map(str, argv))} hung for {timeout} s; stderr:\n"
                    f"{err.decode(errors='replace')[-2000:]}")
    return Outcome(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def assert_one_line_error(res: Outcome, rc: int = 2, *contains: str) -> str:
    """The documented outcome of bad input: exit `rc`, exactly one line on stderr, no traceback."""
    assert "Traceback" not in res.stderr, res.stderr
    assert res.rc == rc, f"exit {res.rc}, expected {rc}; stderr:\n{res.stderr}"
    lines = res.err_lines
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{res.stderr}"
    for text in contains:
        assert text.lower() in lines[0].lower(), f"{text!r} not in {lines[0]!r}"
    return lines[0]


class _Canary:
    """A pickle that creates `path` when it is unpickled: if the file appears, code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (os.fspath(self.path),))


@dataclass
class Canary:
    path: Path

    def payload(self) -> bytes:
        """Pickle bytes that run os.mkdir(canary) when loaded by pickle or torch.load(weights_only=False)."""
        return pickle.dumps(_Canary(self.path), protocol=2)

    def check(self) -> None:
        assert not self.path.exists(), f"code from a file was executed: {self.path} appeared"


@pytest.fixture
def canary(tmp_path) -> Canary:
    c = Canary(tmp_path / "CANARY-code-was-executed")
    yield c
    c.check()


def snapshot(folder: Path) -> set[str]:
    """Every path under `folder` (relative), to show that a command wrote only where it may."""
    return {os.fsdecode(os.path.relpath(os.path.join(root, n), folder))
            for root, dirs, files in os.walk(folder) for n in dirs + files}


def assert_wrote_only_inside(before: set[str], after: set[str], *allowed_prefixes: str) -> None:
    new = {p for p in after - before if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed_prefixes)}
    assert not new, f"files written outside {allowed_prefixes}: {sorted(new)[:10]}"


def _mount_tmpfs(path: Path, size: str, readonly: bool) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tiny filesystem of its own (tmpfs), to fill up: a factory of (size) -> folder.
    Skips where this process may not mount (not root, no CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def make(size: str = "2m", name: str = "disk") -> Path:
        path = tmp_path / name
        if not _mount_tmpfs(path, size, readonly=False):
            pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN)")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder no process can write to: a read-only tmpfs when root (root ignores file modes), else
    a folder with mode 0555. A factory: (name) -> folder."""
    made: list[tuple[Path, bool]] = []

    def make(name: str = "readonly") -> Path:
        path = tmp_path / name
        if os.geteuid() == 0:
            if not _mount_tmpfs(path, "1m", readonly=True):
                pytest.skip("cannot mount a read-only tmpfs here")
            made.append((path, True))
        else:
            path.mkdir()
            path.chmod(0o555)
            made.append((path, False))
        return path

    yield make
    for path, mounted in made:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)
        else:
            path.chmod(0o755)


# session fixtures of the training and generation cases (a tiny curated set, a tiny trained run)
from tests.reliability.train_fixtures import curated_data, trained_run  # noqa: E402,F401


class Hung(BaseException):
    """Raised by `bounded` when its block overruns (a BaseException, so no command's error handler
    swallows it)."""


@contextlib.contextmanager
def bounded(seconds: float, what: str = "the command"):
    """Fail instead of hanging when an in-process block runs longer than `seconds` (SIGALRM interrupts a
    blocking open or read of a FIFO in this thread). Main thread only; for a spawned command use `spawn`."""
    def on_alarm(signum, frame):
        raise Hung(f"{what} hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
