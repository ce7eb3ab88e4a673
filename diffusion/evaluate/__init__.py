"""Prompt-following evaluation of trained runs (`vfm-train eval`): suites, a video analyser, the report.

Light on purpose: `vfm-train --help` builds the parser from here, and the work is imported when it runs.
"""

from __future__ import annotations


def add_eval_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="training run folder (its latest checkpoint, EMA)")
    p.add_argument("--suite", default="shapes", choices=["shapes"], help="prompt suite (default: shapes)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="captions of the shapes world, one a line (or JSON lines with prompt, seeds, heldout)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN/eval)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's config)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the run's config)")
    p.add_argument("--json", action="store_true", help="print one JSON object last (the summary)")


def run_eval(args) -> int:
    from diffusion.evaluate.run import run_eval as _run

    return _run(args)
