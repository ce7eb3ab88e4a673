"""`vfm-train fit | precompute | export | eval`: train a video DiT, cache latents, export a diffusers copy,
measure prompt following."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

from diffusion.errors import UserError, run_command
from diffusion.launch import launch, quiet_progress_unless_tty, under_torchrun

# local CPU ranks beyond this many per core only thrash (and each holds a copy of the model while it loads)
MAX_RANKS_PER_CPU = 4


def _data_arg(text: str) -> tuple[str, float]:
    """PATH or PATH=WEIGHT (a weight is the part after the last '=' when it is a number)."""
    path, sep, weight = text.rpartition("=")
    if sep:
        try:
            w = float(weight)
        except ValueError:
            return text, 1.0
        if not (w > 0 and math.isfinite(w)):
            raise argparse.ArgumentTypeError(f"--data weight must be a finite number > 0, got {weight}")
        return path, w
    return text, 1.0


def _common(p: argparse.ArgumentParser, *, needs_data: bool = True) -> None:
    p.add_argument("--config", default="tiny", metavar="NAME|FILE",
                   help="preset name (tiny, wan-1.3b, wan-14b) or a YAML file (default: tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.optim.lr=1e-4 (repeatable)")
    if needs_data:
        p.add_argument("--data", action="append", type=_data_arg, required=True, metavar="PATH[=WEIGHT]",
                       help="a curated OUT folder, its shards/ folder or a latent folder; repeat to blend "
                            "several with weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfm-train", description=(
        "Train the video diffusion transformer (flow matching, FSDP2 data parallel, context parallel), "
        "precompute latent shards, or export a trained model in diffusers format."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = sub.add_parser("fit", help="train a model into a RUN folder", description=(
        "Train into RUN. --steps is the total length of the run and of the LR schedule; --stop-after K "
        "checkpoints at step K and exits; --resume continues RUN from its last checkpoint to --steps. "
        "Without --resume an existing RUN is refused. --nproc must equal dp x cp x tp (+ encoder ranks); "
        "the degrees live in the config's parallel section, the flags are shorthands."))
    _common(fit)
    fit.add_argument("--out", required=True, metavar="RUN", help="run folder (config, metrics, checkpoints)")
    fit.add_argument("--steps", type=int, default=None, help="total optimizer steps (default: the config's)")
    fit.add_argument("--stop-after", type=int, default=None, metavar="K", help="checkpoint at step K and exit")
    fit.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    fit.add_argument("--val-data", action="append", default=[], metavar="PATH",
                     help="held-back data for the validation loss (default: fixed batches of the training data)")
    fit.add_argument("--nproc", type=int, default=None,
                     help="local ranks to spawn (gloo on CPU, NCCL on GPU); under torchrun its world size")
    fit.add_argument("--dp", type=int, default=None,
                     help="data-parallel degree (parallel.dp; default: the ranks left after cp, tp, encoders)")
    fit.add_argument("--cp", type=int, default=None, help="context-parallel degree (parallel.cp; default 1)")
    fit.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (parallel.tp; default 1)")
    fit.add_argument("--encoder-ranks", type=int, default=None, metavar="N",
                     help="ranks of their own for the text encoder and VAE (parallel.encoders=disjoint); "
                          "--nproc counts them: dp x cp x tp + N")
    fit.add_argument("--init-from", default=None, metavar="PATH",
                     help="start from these weights: a diffusers Wan transformer or pipeline folder, a "
                          "`vfm-train export` folder, or a checkpoint (or RUN) of ours; the model config comes "
                          "with them (with --resume: the run's own, recorded in RUN/run.json)")
    fit.set_defaults(_run=run_fit)

    pre = sub.add_parser("precompute", help="encode clips to latent shards (resumable)", description=(
        "VAE-encode the clips and text-encode the captions of curated data into latent shards "
        "(LATENTS/dataset.json kind 'latent'); a rerun skips finished shards."))
    _common(pre)
    pre.add_argument("--out", required=True, metavar="LATENTS", help="output folder")
    pre.add_argument("--text-encoder", default=None, metavar="DIR",
                     help="text encoder folder (default: the config's path, or RUN-style tiny encoder "
                          "created in LATENTS/text_encoder when the config names none)")
    pre.set_defaults(_run=run_precompute)

    exp = sub.add_parser("export", help="write a diffusers-format copy of a trained model", description=(
        "Write the latest checkpoint of RUN (EMA weights when present) as a diffusers "
        "WanTransformer3DModel folder: config.json + diffusion_pytorch_model.safetensors; a LoRA run writes its "
        "adapters as DIR/pytorch_lora_weights.safetensors (diffusers' Wan pipelines: load_lora_weights)."))
    exp.add_argument("--run", required=True, metavar="RUN", help="training run folder")
    exp.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist)")
    exp.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    exp.set_defaults(_run=run_export)

    from diffusion.evaluate import add_eval_arguments, run_eval  # light: the work is imported when it runs

    ev = sub.add_parser("eval", help="measure how well a trained run follows prompts", description=(
        "Generate a video for every prompt of a suite (shapes: prompts seen in training and held-out "
        "attribute combinations, several seeds each), measure colour, shape and direction of each with a "
        "deterministic analyser, and report per-attribute accuracy: a table, OUT/grid.png, OUT/summary.json."))
    add_eval_arguments(ev)
    ev.set_defaults(_run=run_eval)
    return parser


def resolve_layout(cfg, args):
    """The config's `parallel` section with the flags applied (--dp/--cp/--tp/--encoder-ranks are
    shorthands for parallel.*) and dp resolved for the number of ranks; (nproc, the resolved section)."""
    from dataclasses import replace

    from parallel.config import ParallelConfigError

    par = cfg.parallel
    try:
        flags = {k: v for k, v in (("dp", args.dp), ("cp", args.cp), ("tp", args.tp),
                                   ("encoder_ranks", args.encoder_ranks)) if v is not None}
        for name, value in flags.items():
            if value < (0 if name == "encoder_ranks" else 1):
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if flags.get("encoder_ranks") and par.encoders != "disjoint":
            flags["encoders"] = "disjoint"  # --encoder-ranks N implies disjoint encoders
        par = replace(par, **flags)
        nproc = args.nproc
        if under_torchrun():
            world = int(os.environ["WORLD_SIZE"])
            if nproc is not None and nproc != world:
                raise UserError(f"--nproc {nproc} differs from torchrun's WORLD_SIZE {world}")
            nproc = world
        if nproc is not None and nproc < 1:
            raise UserError("--nproc must be positive")
        if nproc is None:
            nproc = (par.dp or 1) * par.cp * par.tp + par.encoder_ranks
        par = par.resolve(nproc)
        par.check_model(cfg.model.num_heads, cfg.model.ffn_dim)
    except ParallelConfigError as exc:
        raise UserError(str(exc)) from None
    check_rank_count(nproc)
    return nproc, par


def check_rank_count(nproc: int) -> None:
    """Local ranks this machine can run: one GPU each, or a few per CPU core."""
    if under_torchrun():
        return
    import torch

    from parallel.device import use_cuda

    if use_cuda():
        if nproc > torch.cuda.device_count():
            raise UserError(f"--nproc {nproc} needs {nproc} GPUs; this machine has {torch.cuda.device_count()}")
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if nproc > MAX_RANKS_PER_CPU * cores:
        raise UserError(f"--nproc {nproc} is more than {MAX_RANKS_PER_CPU} ranks per CPU core ({cores} cores here)")


def check_training_memory(cfg, nproc: int) -> None:
    """On the CPU every local rank builds the whole model before sharding it; refuse what cannot fit."""

    from diffusion.memory import available_bytes, describe, dit_params
    from parallel.device import use_cuda

    if use_cuda() or under_torchrun():
        return
    params = dit_params(cfg.model)
    need = params * 4 * (nproc + 4)  # each rank's full build, plus sharded grads, Adam moments and EMA
    have = available_bytes()
    if need > have:
        raise UserError(f"the model ({params / 1e6:.0f}M parameters) needs about {describe(need)} to train on "
                        f"{nproc} CPU rank(s); {describe(have)} is available")


def _check_data(sources: list[tuple[str, float]]) -> set[str]:
    """Every source exists and holds shards of one known kind (checked before any rank starts); the kinds."""
    from dataload.files import describe_os_error
    from dataload.loader.sources import resolve_source

    kinds = set()
    for path, _ in sources:
        if "://" not in path and not Path(path).exists():
            raise UserError(f"--data {path}: no such file or folder")
        try:
            kinds.add(resolve_source(path)[0])
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--data {path}: {' '.join(str(exc).split())}") from None
        except OSError as exc:
            raise UserError(f"--data {path}: {describe_os_error(exc)}") from None
    return kinds


def run_fit(args) -> int:
    from dataload.lock import FolderLock
    from diffusion.config import check_packing, load_config, to_dict
    from diffusion.fit import FitPlan, fit_rank, prepare_run

    cfg = load_config(args.config, args.overrides)
    init = _init_source(args)
    if init is not None:
        from diffusion.init_from import apply

        cfg = apply(cfg, init)
    nproc, cfg.parallel = resolve_layout(cfg, args)
    check_packing(cfg, _check_data(args.data))
    steps = args.steps if args.steps is not None else cfg.train.steps
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if args.stop_after is not None and not 1 <= args.stop_after <= steps:
        raise UserError(f"--stop-after must be between 1 and --steps ({steps}), got {args.stop_after}")
    cfg.train.steps = steps
    if args.val_data:
        _check_data([(p, 1.0) for p in args.val_data])
        cfg.train.val_data = [str(Path(p).resolve()) for p in args.val_data]
    check_training_memory(cfg, nproc)
    run = Path(args.out).resolve()
    if run.exists() and not run.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    if not args.resume and run.is_dir() and any(run.iterdir()) and not (run / "config.yaml").exists():
        raise UserError(f"--out {args.out} already exists and holds no training run; choose another --out")
    plan = FitPlan(run=str(run), sources=[(p, w) for p, w in args.data], steps=steps,
                   stop_after=args.stop_after, resume=args.resume,
                   init_from=None if init is None else dataclasses.asdict(init))
    rank0 = not under_torchrun() or int(os.environ.get("RANK", "0")) == 0
    if args.resume and not (run / "config.yaml").is_file():
        raise UserError(f"--resume: {run} is not a training run (no config.yaml)")
    with FolderLock(run, ".lock", command="vfm-train fit") if rank0 else _no_lock():
        if rank0:
            prepare_run(cfg, plan)
        status = launch(fit_rank, nproc, {"cfg_dict": to_dict(cfg), "plan": plan},
                        verbose_errors=bool(os.environ.get("VFM_DEBUG")))
    if status == 0 and rank0:
        last = "stopped at" if args.stop_after is not None and args.stop_after < steps else "finished at"
        print(f"vfm-train fit: {last} step {args.stop_after or steps}; run in {plan.run}", file=sys.stderr)
    return status


def _init_source(args):
    """--init-from, or on --resume the source the run recorded (the user need not repeat it)."""
    import json

    from diffusion.init_from import InitSource, resolve

    recorded = None
    run_json = Path(args.out) / "run.json"
    if args.resume and run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text()).get("init_from")
        except (OSError, ValueError, AttributeError):
            raise UserError(f"--resume: {run_json} is not readable") from None
    if args.init_from is None:
        return InitSource(**recorded) if recorded else None
    src = resolve(args.init_from)
    if recorded and recorded.get("path") != src.path:
        raise UserError(f"--resume: the run started from {recorded.get('path')}, not {src.path}")
    return src


class _no_lock:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def run_precompute(args) -> int:
    from dataload.lock import FolderLock
    from diffusion.config import load_config
    from diffusion.precompute import precompute

    cfg = load_config(args.config, args.overrides)
    _check_data(args.data)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    with FolderLock(out, ".lock", command="vfm-train precompute"):
        n = precompute(cfg, [(p, w) for p, w in args.data], out, text_encoder_dir=args.text_encoder)
    print(f"vfm-train precompute: {n} clip(s) encoded into {args.out}", file=sys.stderr)
    return 0


def run_export(args) -> int:
    from diffusion.export import export_run

    out = export_run(Path(args.run), Path(args.out), prefer_ema=not args.no_ema,
                     warn=lambda line: print(f"vfm-train export: warning: {line}", file=sys.stderr))
    print(f"vfm-train export: wrote {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_progress_unless_tty()
    return run_command(f"vfm-train {args.command}", lambda: args._run(args))


if __name__ == "__main__":
    sys.exit(main())
