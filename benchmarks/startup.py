"""`python -m benchmarks startup`: how fast every command starts, beside PySceneDetect's `scenedetect`.

Each contender is a fresh process, timed wall clock from spawn to exit (median of --repeats, interleaved):
`--help` of every `vfm-*` command and subcommand, and `vfm-curate probe` / `vfm-curate scenes --splitter
content` on a tiny video (a few frames, so the time is the start-up), against `scenedetect --help` and
`scenedetect ... detect-content` on the same video, and a bare `python -c pass`. A second, untimed run of
each command under `python -X importtime` lists the heavy packages it imports (torch, transformers,
diffusers, ray, matplotlib, pyarrow, scenedetect): a command must not import one it does not use.
The target is at most 0.5 s per command on an idle machine (DESIGN.md section 3: "well under a second").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import BenchResult, median

HEAVY = ("torch", "transformers", "diffusers", "ray", "matplotlib", "pyarrow", "scenedetect", "decord", "megatron")
TARGET_S = 0.5
BIN = Path(sys.executable).parent


def _vfm(entry: str, *args: str) -> tuple[list[str], str, list[str]]:
    """(command line, module with main(), argv) of a console script of ours."""
    module = {"vfm-curate": "curate.cli", "vfm-train": "diffusion.cli_train", "vfm-generate": "diffusion.cli_generate"}
    exe = BIN / entry
    cmd = [str(exe), *args] if exe.is_file() else [sys.executable, "-m", module[entry], *args]
    return cmd, module[entry], [entry, *args]


def contenders(video: str) -> dict[str, tuple[list[str], str | None, list[str]]]:
    """name -> (command line, module whose main() to trace for imports or None, argv)."""
    out = {
        "python -c pass": ([sys.executable, "-c", "pass"], None, []),
        "vfm-curate --help": _vfm("vfm-curate", "--help"),
        "vfm-curate run --help": _vfm("vfm-curate", "run", "--help"),
        "vfm-curate probe --help": _vfm("vfm-curate", "probe", "--help"),
        "vfm-curate scenes --help": _vfm("vfm-curate", "scenes", "--help"),
        "vfm-curate report --help": _vfm("vfm-curate", "report", "--help"),
        "vfm-curate probe VIDEO": _vfm("vfm-curate", "probe", video),
        "vfm-curate scenes VIDEO (content)": _vfm("vfm-curate", "scenes", "--splitter", "content", video),
        "vfm-train --help": _vfm("vfm-train", "--help"),
        "vfm-generate --help": _vfm("vfm-generate", "--help"),
    }
    psd = shutil.which("scenedetect", path=str(BIN)) or shutil.which("scenedetect")
    if psd:
        out["scenedetect --help"] = ([psd, "--help"], None, [])
        out["scenedetect detect-content VIDEO"] = ([psd, "-q", "-i", video, "detect-content", "list-scenes", "-n"],
                                                  None, [])
    return out


def heavy_imports(module: str, argv: list[str]) -> list[str]:
    """The heavy packages a command imports (from `python -X importtime` of its main())."""
    code = f"import sys; sys.argv = {argv!r}; from {module} import main; sys.exit(main())"
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         timeout=300)
    found = set()
    for line in res.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name in HEAVY:
                found.add(name)
    return sorted(found)


def _tiny_video(folder: Path) -> str:
    from dataload.synthetic import Shot, make_video

    path = folder / "tiny.mp4"
    make_video(path, [Shot("pan", 4, seed=1)], [], width=64, height=36)
    return str(path)


def run(args) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="vfm-startup-") as tmp:
        video = _tiny_video(Path(tmp))
        cmds = contenders(video)
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(max(1, args.repeats)):  # interleaved: machine noise hits every command alike
            for name, (cmd, _, _) in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp,
                               timeout=300)
                times[name].append(time.perf_counter() - t0)
        rows = []
        for name, (_, module, argv) in cmds.items():
            med = median(times[name])
            heavy = heavy_imports(module, argv) if module else []
            rows.append({"command": name, "median_s": med, "min_s": min(times[name]),
                         "within_0.5s": med <= TARGET_S, "heavy_imports": ",".join(heavy) or "-"})
    by = {r["command"]: r["median_s"] for r in rows}
    ratios = {}
    if "scenedetect --help" in by:
        ratios["vfm-curate --help / scenedetect --help (time)"] = by["vfm-curate --help"] / by["scenedetect --help"]
    if "scenedetect detect-content VIDEO" in by:
        ratios["vfm-curate scenes / scenedetect detect-content (time, tiny video)"] = (
            by["vfm-curate scenes VIDEO (content)"] / by["scenedetect detect-content VIDEO"])
    slow = [r["command"] for r in rows if r["command"].startswith("vfm") and not r["within_0.5s"]]
    notes = [f"wall time of a fresh process, median of {args.repeats}; target <= {TARGET_S} s on an idle machine",
             "over the target here: " + (", ".join(slow) if slow else "none")]
    return BenchResult("startup", ["command", "median_s", "min_s", "within_0.5s", "heavy_imports"], rows,
                       ratios=ratios, notes=notes)
