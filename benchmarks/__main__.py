"""`python -m benchmarks NAME [--json]`; `all` runs every benchmark in turn."""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks.harness import print_result

# command-line name -> module
BENCHMARKS = {
    "decode": "benchmarks.decode",
    "split": "benchmarks.split",
    "startup": "benchmarks.startup",
    "load": "benchmarks.load",
    "curate": "benchmarks.curate",
    "cp": "benchmarks.cp",
    "hetero": "benchmarks.hetero",
    "dit": "benchmarks.dit",
    "sample": "benchmarks.sample",
    "cp-train": "benchmarks.cp_train",
    "gpu": "benchmarks.gpu",
    "demo": "benchmarks.demo",
    "memory": "benchmarks.memory",
    "hetero-video": "benchmarks.hetero_video",
    "pack": "benchmarks.pack",
    "dedup": "benchmarks.dedup",
}


def _available() -> dict[str, object]:
    found = {}
    for name, mod in BENCHMARKS.items():
        try:
            found[name] = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return found


def main(argv: list[str] | None = None) -> int:
    modules = _available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Side-by-side benchmarks against the anchors, reported as ratios.")
    parser.add_argument("name", choices=[*modules, "all"], help="benchmark to run ('all' runs every one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per contender (median reported)")
    known, rest = parser.parse_known_args(argv)
    names = list(modules) if known.name == "all" else [known.name]
    status = 0
    for name in names:
        module = modules[name]
        sub = argparse.ArgumentParser(prog=f"python -m benchmarks {name}")
        if hasattr(module, "add_arguments"):
            module.add_arguments(sub)
        args, unknown = sub.parse_known_args(rest)
        if unknown and known.name != "all":
            sub.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.json = known.json
        args.repeats = known.repeats
        try:
            result = module.run(args)
        except Exception as exc:  # one line per failed benchmark, the others still run
            print(f"benchmark {name}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
            continue
        print_result(result, known.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
