"""`vfm-train fit`: the run folder, the training loop on every rank, validation, samples, checkpoints.

RUN/
  .lock              held by the job while it runs (a second job on RUN is refused, naming the holder)
  config.yaml        the full ExperimentConfig (a rerun with --resume must match it, --steps aside)
  run.json           data sources with weights, dp and cp
  text_encoder/      the tiny random text encoder + tokenizer when the config names no path
  metrics.jsonl      one JSON object per logged step (step, loss, lr, grad_norm, samples_per_s, ...)
                     and per validation (step, val_loss)
  checkpoints/step-NNNNNNN/   DCP checkpoints (diffusion.checkpoint)
  samples/step-NNNNNNN-K.mp4  sample videos made during training

Faults a run survives: a batch in which some rank has no sample left (its clips were unreadable) is
skipped by every rank together, so ranks stay in step; a step whose loss or gradient is not finite
changes no weight and is counted (`nonfinite_steps`), and `train.max_nonfinite_steps` of them in a row
stop the run (exit 2) before a checkpoint could hold non-finite weights; --resume passes over damaged
checkpoints (newest first) with a warning, and over a torn last line of metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from dataload.files import atomic_write_text, read_regular_text
from diffusion.checkpoint import load_checkpoint, save_checkpoint, usable_checkpoints
from diffusion.config import ExperimentConfig, from_dict, save_config, to_dict
from diffusion.errors import UserError
from diffusion.trainer import Trainer, build_parallel_state, reshard

TEXT_ENCODER_DIR = "text_encoder"


@dataclass
class FitPlan:
    run: str
    sources: list[tuple[str, float]]
    steps: int
    stop_after: int | None
    resume: bool
    resume_from: list[str] | None = None  # complete checkpoints, newest first (set by prepare_run)
    init_from: dict | None = None  # fields of diffusion.init_from.InitSource: where the weights start


# ---------------------------------------------------------------- run folder (parent process)

def prepare_run(cfg: ExperimentConfig, plan: FitPlan) -> None:
    """Check and create RUN before any rank starts; everything here is a one-line UserError."""
    run = Path(plan.run)
    saved_cfg = run / "config.yaml"
    if plan.resume:
        if not saved_cfg.is_file():
            raise UserError(f"--resume: {run} is not a training run (no config.yaml)")
        import yaml

        try:
            saved = yaml.safe_load(read_regular_text(saved_cfg, "config", 16 << 20))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise UserError(f"--resume: {saved_cfg} is not readable ({type(exc).__name__})") from None
        if not isinstance(saved, dict):
            raise UserError(f"--resume: {saved_cfg} is not a config")
        mine = to_dict(cfg)
        if isinstance(saved.get("train"), dict):
            saved["train"].pop("steps", None)
        mine["train"].pop("steps", None)
        was = saved.pop("parallel", None) or {}  # a run may resume on another layout (the loader re-splits)
        mine.pop("parallel", None)
        now = cfg.parallel
        if "disjoint" in (was.get("encoders"), now.encoders) and (
                (was.get("encoders"), was.get("encoder_ranks"), was.get("dp")) !=
                (now.encoders, now.encoder_ranks, now.dp)):
            # the loader positions live on the ranks that load: disjoint encoder ranks keep their own
            raise UserError(f"--resume: the run loaded its data with parallel.encoders={was.get('encoders')} "
                            f"(encoder_ranks {was.get('encoder_ranks')}, dp {was.get('dp')}); resume it with the same")
        if saved != mine:
            diff = _first_difference(saved, mine)
            raise UserError(f"--resume: the config differs from {saved_cfg} at {diff}")
        good, damaged = usable_checkpoints(run)
        if not good:
            why = f" ({damaged[0][1]})" if damaged else ""
            raise UserError(f"--resume: {run} has no complete checkpoint to resume from{why}")
        step = good[0][0]
        for bad_step, why in damaged:
            if bad_step > step:
                print(f"vfm-train fit: warning: {why}; resuming from {good[0][1].name}", file=sys.stderr)
        if step >= plan.steps:
            raise UserError(f"--resume: {run} is already at step {step} >= --steps {plan.steps}")
        plan.resume_from = [str(p) for _, p in good]
        return
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        if not _failed_start(run):
            raise UserError(f"{run} already exists; pass --resume to continue it or choose another --out")
        # a run that died before its first checkpoint: start it again from scratch
        import shutil

        for name in [*_OWN_FILES, *(p.name for p in run.iterdir() if _is_tmp(p.name))]:
            if name == ".lock":
                continue  # held by this job
            target = run / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run.mkdir(parents=True, exist_ok=True)
    cached = [Path(p) / TEXT_ENCODER_DIR for p, _ in plan.sources if (Path(p) / TEXT_ENCODER_DIR).is_dir()]
    from diffusion.init_from import InitSource, copy_text_encoder

    if plan.init_from is not None and copy_text_encoder(InitSource(**plan.init_from), run):
        pass  # the pretrained model's own text encoder
    elif cfg.text.path is None and cached:
        # latents made by `vfm-train precompute` with the tiny encoder: train and generate with that one
        import shutil

        shutil.copytree(cached[0], run / TEXT_ENCODER_DIR)
    elif cfg.text.path is None:
        from diffusion.text_encoder import create_tiny_text_encoder

        torch.manual_seed(cfg.train.seed)
        create_tiny_text_encoder(str(run / TEXT_ENCODER_DIR), dim=cfg.text.dim or cfg.model.text_dim,
                                 max_length=cfg.text.max_length, seed=cfg.train.seed, vocab=cfg.text.vocab)
    save_config(cfg, run / "config.yaml")
    atomic_write_text(run / "run.json", json.dumps(
        {"data": [[p, w] for p, w in plan.sources], "parallel": to_dict(cfg.parallel), "init_from": plan.init_from},
        indent=1))


_OWN_FILES = (".lock", "config.yaml", "config.yaml.tmp", "run.json", "run.json.tmp", TEXT_ENCODER_DIR,
              "metrics.jsonl", "metrics.jsonl.tmp", "checkpoints", "samples", "tb")


def _failed_start(run: Path) -> bool:
    """RUN holds only what `fit` writes and no checkpoint (not even a partial one): a start that failed."""
    own = set(_OWN_FILES)
    if not run.is_dir() or not all(p.name in own or _is_tmp(p.name) for p in run.iterdir()):
        return False
    checkpoints = run / "checkpoints"
    return not (checkpoints.is_dir() and any(checkpoints.iterdir()))


def _is_tmp(name: str) -> bool:
    """A temporary file of dataload.files' atomic writer (a job killed while writing)."""
    return name.startswith(".") and name.endswith(".tmp")


def _first_difference(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
    return f"{where} ({a!r} in RUN, {b!r} now)"


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the lines of steps <= step (the restored one); later ones are redone by the resumed run.
    A line that is not a JSON object (torn by a kill while it was written) is dropped."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step", 0), int) and record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


# ---------------------------------------------------------------- the loop (every rank)

def _saved_tensors(cfg: ExperimentConfig):
    """Which model tensors a checkpoint of this run holds: all, or the LoRA adapters only."""
    if cfg.train.lora.enabled:
        from diffusion.lora import is_adapter

        return is_adapter
    return None


def _restore(trainer: Trainer | None, candidates: list[str], is_main: bool, only=None, group=None) -> dict:
    """Load the newest checkpoint that loads on every rank; a damaged one is passed over with a warning.
    A rank without a trainer (a disjoint encoder rank) reads its record only; `group`: the model's ranks."""
    last_error = "no checkpoint"
    for k, path in enumerate(candidates):
        try:
            if trainer is None:
                meta = load_checkpoint(Path(path), model=None)
            else:
                meta = load_checkpoint(Path(path), model=trainer.model, optimizer=trainer.optimizer,
                                       ema=trainer.ema, scheduler=trainer.scheduler, only=only, process_group=group)
            ok = 1
        except Exception as exc:  # damaged tensors found only while loading (DCP raises on every rank)
            meta, ok, last_error = {}, 0, " ".join(str(exc).split())[:300] or type(exc).__name__
        flag = torch.tensor([ok], dtype=torch.int32)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag):
            return meta
        if is_main and k + 1 < len(candidates):
            print(f"vfm-train fit: warning: {Path(path).name} could not be loaded ({last_error}); "
                  f"trying {Path(candidates[k + 1]).name}", file=sys.stderr)
    raise UserError(f"--resume: no checkpoint of the run could be loaded (last: {last_error})")


def build_model(cfg: ExperimentConfig, par, device: torch.device, plan: FitPlan) -> torch.nn.Module:
    """The DiT of this run, sharded from the start (meta device, the model's plan, each rank's own
    shards): seeded, or from --init-from (a pretrained folder read by slices, or a checkpoint of ours
    read by DCP). A resumed run's weights come from its checkpoint afterwards."""
    from diffusion.dit.build import build_dit
    from diffusion.dit.weights import DiffusersWeights
    from diffusion.trainer import DTYPES, parallelize_for_training

    src = plan.init_from
    weights = None
    lora = cfg.train.lora
    if src is not None and src["kind"] != "checkpoint" and (not plan.resume or lora.enabled):
        weights = DiffusersWeights(src["weights"], cfg.model.num_layers, cfg.model.cross_attn_norm)
    parallelize = None
    if par.mesh is not None or par.cp is not None:
        def parallelize(m):
            return parallelize_for_training(m, cfg.train, par, device)
    model = build_dit(cfg.model, device=device, dtype=DTYPES[cfg.train.dtype], seed=cfg.train.seed,
                      parallelize=parallelize, lora=lora, weights=weights)
    if src is not None and src["kind"] == "checkpoint" and (not plan.resume or lora.enabled):
        from diffusion.checkpoint import load_sharded_weights
        from diffusion.lora import base_name

        load_sharded_weights(Path(src["weights"]), model, prefer_ema=True, rename=base_name)
    return model


def fit_rank(rank: int, world_size: int, *, cfg_dict: dict, plan: FitPlan) -> None:
    from diffusion.encoders import DisjointFeed, EncoderService, LocalFeed, text_encoder_dir
    from parallel.device import rank_device

    cfg: ExperimentConfig = from_dict(ExperimentConfig, cfg_dict)
    run = Path(plan.run)
    device = rank_device().device
    pc = cfg.parallel
    # every rank builds every layout, in the same order (group creation is collective)
    par = build_parallel_state(pc.dp, pc.cp, pc.cp_mode, tp=pc.tp, cp_ulysses=pc.cp_ulysses, ranks=pc.backbone_ranks)
    enc_layout = None
    if pc.encoders == "disjoint":
        from parallel.layout import ParallelLayout

        enc_layout = ParallelLayout(name="encoders", dp=pc.encoder_ranks,
                                    rank_offset=pc.backbone_ranks).build(backend=dist.get_backend())
    is_main = rank == 0
    end = plan.steps if plan.stop_after is None else min(plan.steps, plan.stop_after)
    text_dir = text_encoder_dir(run, cfg)
    torch.manual_seed(cfg.train.seed)  # any global-RNG draw (LoRA dropout) starts alike on every rank
    if enc_layout is not None and enc_layout.is_member:
        service = EncoderService(cfg, plan.sources, device, text_dir, enc_layout)
        _serve(service, cfg, plan, run, end)
        return

    feed = DisjointFeed(cfg, par, device) if enc_layout is not None else \
        LocalFeed(cfg, plan.sources, par, device, text_dir)
    model = build_model(cfg, par, device, plan)
    trainer = Trainer(model, cfg.train, cfg.flow, total_steps=plan.steps, par=par, null_text=feed.null_text,
                      device=device)
    backbone = par.layout.group(("tp", "cp", "dp")) if par.layout is not None else None
    start = 0
    metrics_path = run / "metrics.jsonl"
    state = {"nonfinite_steps": 0, "skipped_batches": 0}
    if plan.resume:
        meta = _restore(trainer, plan.resume_from or [], is_main, _saved_tensors(cfg), backbone)
        start = int(meta["step"])
        state.update({k: int(v) for k, v in (meta.get("extra") or {}).items() if k in state})
        feed.load_loader_state(meta.get("loader"))
        if is_main:
            truncate_metrics(metrics_path, start)
    if dist.is_initialized():
        dist.barrier()

    from diffusion.monitor import TrainMonitor

    monitor = TrainMonitor(run, enabled=is_main and cfg.train.tensorboard, start_step=start)  # RUN/tb/
    progress = _progress(is_main, start, plan.steps)
    held_back = bool(cfg.train.val_data)
    in_a_row = 0
    with open(metrics_path, "a") if is_main else _null() as log:
        for step in range(start, end):
            t_data = time.perf_counter()
            epoch, micro, skipped = feed.next_step()  # one optimizer step over grad_accum loader batches
            state["skipped_batches"] += skipped
            t_data = time.perf_counter() - t_data
            metrics = trainer.train_step(step, micro if len(micro) > 1 else micro[0])
            metrics["data_time_s"] = t_data
            done = step + 1
            if metrics["skipped"]:
                state["nonfinite_steps"] += 1
                in_a_row += 1
                if in_a_row >= cfg.train.max_nonfinite_steps:
                    raise UserError(
                        f"training stopped at step {done}: {in_a_row} steps in a row had a non-finite loss or "
                        f"gradient (loss {metrics['loss']}, grad norm {metrics['grad_norm']}); no checkpoint "
                        "was written after them; lower train.optim.lr or check the data")
            else:
                in_a_row = 0
            metrics.update(state)
            if is_main and (done % cfg.train.log_every == 0 or done == end):
                metrics["epoch"] = epoch
                log.write(json.dumps(metrics) + "\n")
                log.flush()
                monitor.scalars(metrics)
            if feed.val_batches and done % cfg.train.val_every == 0:
                val = trainer.eval_loss(feed.val_batches)
                if is_main:
                    log.write(json.dumps({"step": done, "val_loss": val, "val_held_back": held_back}) + "\n")
                    log.flush()
                    monitor.scalars({"step": done, "val_loss": val})
            if cfg.train.sample_every > 0 and done % cfg.train.sample_every == 0:
                _write_samples(trainer, feed, cfg, run, done, is_main, monitor)
            if done % cfg.train.checkpoint_every == 0 or done == end:
                if not trainer.weights_finite():
                    raise UserError(f"training stopped at step {done}: the weights are no longer finite; "
                                    "no checkpoint was written for this step; lower train.optim.lr")
                save_checkpoint(run, done, model=trainer.model, optimizer=trainer.optimizer, ema=trainer.ema,
                                scheduler=trainer.scheduler, loader_state=feed.loader_state(), extra=dict(state),
                                only=_saved_tensors(cfg), process_group=backbone)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}")
    if progress is not None:
        progress.close()
    monitor.close()


def _serve(service, cfg: ExperimentConfig, plan: FitPlan, run: Path, end: int) -> None:
    """A disjoint encoder rank's run: stream batches ahead, take part in every checkpoint (its loader
    state is its part of the record) and in the collectives of the backbone's restore."""
    start = 0
    if plan.resume:
        meta = _restore(None, plan.resume_from or [], False)
        start = int(meta["step"])
        service.load_loader_state(meta.get("loader"))
    dist.barrier()
    for step in range(start, end):
        service.step()
        done = step + 1
        if done % cfg.train.checkpoint_every == 0 or done == end:
            save_checkpoint(run, done, model=None, optimizer=None, loader_state=service.loader_state())
    service.finish()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(is_main: bool, start: int, total: int):
    if not is_main or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step")


def _write_samples(trainer: Trainer, feed, cfg: ExperimentConfig, run: Path, step: int,
                   is_main: bool, monitor=None) -> None:
    """Sample the training prompts with the EMA weights (every rank takes part: FSDP and CP are collective)."""
    from diffusion.generate import sample_latents, write_video

    prompts = cfg.train.sample_prompts or [""]
    model = trainer.model
    vae = feed.vae if feed.vae is not None else feed.decoder()
    backup = None
    if trainer.ema is not None:
        backup = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.ema.copy_to(model)
    model.eval()
    try:
        for k, prompt in enumerate(prompts):
            latents = sample_latents(model, _FeedText(feed), vae, cfg, prompt=prompt, device=trainer.device,
                                     dtype=trainer.dtype, frames=cfg.train.sample_frames or None)
            if is_main:
                video = vae.decode(latents.float())
                out = run / "samples" / f"step-{step:07d}-{k}.mp4"
                out.parent.mkdir(parents=True, exist_ok=True)
                write_video(video[0], out, fps=_fps(cfg))
                if monitor is not None:
                    from diffusion.generate import to_uint8_frames

                    monitor.frames(f"samples/{k}", to_uint8_frames(video[0]), step)
    finally:
        model.train()
        reshard(model)
        if backup is not None:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(backup[n])


class _FeedText:
    """The text-encoder interface of sample_latents, answered by the feed (which may hold no encoder)."""

    def __init__(self, feed):
        self.feed = feed

    def encode(self, prompts: list[str]):
        return self.feed.encode_prompt(prompts[0])


def _fps(cfg: ExperimentConfig) -> float:
    return float(getattr(cfg.data, "fps", None) or 8.0)
