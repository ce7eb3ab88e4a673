"""Starting from pretrained weights and LoRA, with tiny saved Wan models:
- `--init-from` a diffusers folder: at step 0 the model equals diffusers' own model from that folder (on
  2 ranks, each loading only its shards), and fine-tuning resumes exactly;
- meta-device initialisation (sharded over 2 ranks) equals eager initialisation;
- LoRA: only adapters train and are checkpointed; the merged model equals base + scale * B @ A; the
  exported adapters load into a diffusers Wan pipeline whose output equals `vfm-generate --lora`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.diffusion.test_trainer_helpers import curated  # noqa: F401  (session fixture)
from tests.helpers.distributed import run_ranks

FAST = ["--set", "data.num_frames=4", "--set", "data.buckets=[[16, 16]]", "--set", "train.val_every=0",
        "--set", "train.sample_every=0", "--set", "train.checkpoint_every=2", "--set", "sampler.steps=2",
        "--set", "train.tensorboard=false"]


def _tiny_diffusers_dit(folder: Path, seed: int = 0) -> Path:
    """A random WanTransformer3DModel in the tiny preset's shape, saved by diffusers itself."""
    from diffusers import WanTransformer3DModel

    from diffusion.dit import tiny_dit
    from diffusion.dit.convert import to_diffusers_config

    torch.manual_seed(seed)
    WanTransformer3DModel(**to_diffusers_config(tiny_dit())).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory) -> Path:
    return _tiny_diffusers_dit(tmp_path_factory.mktemp("wan") / "transformer")


def _fit(data, out, *extra) -> int:
    from diffusion.cli_train import main

    return main(["fit", "--config", "tiny", "--data", str(data), "--out", str(out), *FAST, *extra])


def _model_weights(run: Path, step: int, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    from diffusion.checkpoint import load_weights
    from diffusion.config import load_config
    from diffusion.dit import VideoDiT

    model = VideoDiT(load_config(str(run / "config.yaml")).model)
    load_weights(run / "checkpoints" / f"step-{step:07d}", model, prefer_ema=prefer_ema)
    return model.state_dict()


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def test_init_from_diffusers_equals_diffusers_at_step_0(wan_folder, curated, tmp_path):  # noqa: F811
    """lr 0: the step-2 checkpoint holds the loaded weights; 2 ranks each read only their shards."""
    from diffusers import WanTransformer3DModel

    from diffusion.dit import VideoDiT

    run = tmp_path / "run"
    assert _fit(curated, run, "--steps", "2", "--nproc", "2", "--init-from", str(wan_folder),
                "--set", "train.optim.lr=0", "--set", "train.optim.weight_decay=0") == 0
    assert json.loads((run / "run.json").read_text())["init_from"]["kind"] == "diffusers"
    from diffusion.config import load_config

    model = VideoDiT(load_config(str(run / "config.yaml")).model)
    model.load_state_dict(_model_weights(run, 2))
    ref = WanTransformer3DModel.from_pretrained(str(wan_folder)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 4, 8, 8, generator=g)
    t = torch.tensor([100.0, 700.0])
    text = torch.randn(2, 7, 64, generator=g)
    with torch.no_grad():
        diff = (model.eval()(x, t, text) - ref(x, t, text, return_dict=False)[0]).abs().max().item()
    assert diff < 1e-5, diff


def test_fine_tuning_from_diffusers_resumes_exactly(wan_folder, curated, tmp_path):  # noqa: F811
    straight, split = tmp_path / "straight", tmp_path / "split"
    init = ["--init-from", str(wan_folder)]
    assert _fit(curated, straight, "--steps", "4", *init) == 0
    assert _fit(curated, split, "--steps", "4", "--stop-after", "2", *init) == 0
    assert _fit(curated, split, "--steps", "4", "--resume") == 0  # the source comes from RUN/run.json
    assert _losses(split) == _losses(straight)
    for k, v in _model_weights(straight, 4).items():
        assert torch.equal(v, _model_weights(split, 4)[k]), k


def _meta_body(rank, world_size, folder):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from diffusion.dit import VideoDiT, tiny_dit
    from diffusion.dit.build import build_dit
    from diffusion.dit.parallelize import parallelize_dit
    from diffusion.dit.weights import DiffusersWeights, SeededInit, fill

    cfg = tiny_dit()
    mesh = init_device_mesh("cpu", (world_size,))
    out = {}
    for name in ("seeded", "diffusers"):
        weights = DiffusersWeights(folder, cfg.num_layers) if name == "diffusers" else None
        model = build_dit(cfg, device=torch.device("cpu"), dtype=torch.float32, seed=5,
                          parallelize=lambda m: parallelize_dit(m, mesh), weights=weights)
        eager = VideoDiT(cfg)  # every tensor whole, in one process
        fill(eager, DiffusersWeights(folder, cfg.num_layers) if weights is not None else SeededInit(eager, 5))
        for n, p in model.named_parameters():
            full = p.full_tensor()
            local = p.to_local()
            assert local.numel() < full.numel() or full.shape[0] < world_size, n  # really sharded
            assert torch.equal(full, dict(eager.named_parameters())[n]), (name, n)
        out[name] = len(list(model.parameters()))
    dist.barrier()
    return out


def test_meta_device_initialisation_equals_eager(wan_folder):
    results = run_ranks(_meta_body, world_size=2, kwargs={"folder": str(wan_folder)})
    assert results[0]["seeded"] == results[0]["diffusers"] > 20


def test_merged_lora_is_base_plus_scaled_product():
    from diffusion.dit import VideoDiT, tiny_dit
    from diffusion.lora import LoRAConfig, adapter_state_dict, add_adapters, merge_into

    torch.manual_seed(0)
    base = VideoDiT(tiny_dit()).double()
    lora = LoRAConfig(rank=4, alpha=8.0)
    adapted = add_adapters(copy.deepcopy(base), lora)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if ".lora_B." in n:
                p.normal_()
    adapters = adapter_state_dict(adapted)
    merged = copy.deepcopy(base)
    assert merge_into(merged, adapters, lora.scale) == 2 * 10  # 10 projections per block
    for name, w in merged.named_parameters():
        module, leaf = name.rsplit(".", 1)
        if leaf == "weight" and f"{module}.lora_A.weight" in adapters:
            a, b = adapters[f"{module}.lora_A.weight"], adapters[f"{module}.lora_B.weight"]
            expected = dict(base.named_parameters())[name] + 2.0 * b @ a
            assert torch.allclose(w, expected, atol=1e-12), name
        else:
            assert torch.equal(w, dict(base.named_parameters())[name]), name
    x = torch.randn(1, 12, 2, 4, 4, dtype=torch.float64)
    t, text = torch.tensor([300.0]), torch.randn(1, 5, 64, dtype=torch.float64)
    with torch.no_grad():
        assert (merged(x, t, text) - adapted(x, t, text)).abs().max() < 1e-12


def _tiny_pipeline(folder: Path) -> Path:
    """A tiny Wan pipeline saved by diffusers: transformer, UMT5 + byte tokenizer, Wan VAE, UniPC."""
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    from diffusion.vae import create_tiny_wan_vae

    torch.manual_seed(0)
    tok = ByT5Tokenizer()
    te = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                     num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0))
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                        in_channels=4, out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64,
                                        num_layers=2, rope_max_seq_len=32)
    create_tiny_wan_vae(str(folder / "_vae"))
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(str(folder / "_vae"))
    sched = UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                    use_flow_sigmas=True, flow_shift=3.0, solver_order=2)
    WanPipeline(tokenizer=tok, text_encoder=te, transformer=transformer, vae=vae,
                scheduler=sched).save_pretrained(str(folder / "pipe"))
    return folder / "pipe"


@pytest.mark.slow
def test_lora_trains_only_adapters_and_exports_to_diffusers(curated, tmp_path):  # noqa: F811
    """LoRA fine-tuning of a saved pipeline's transformer: checkpoints hold adapters only and the base is
    untouched; the exported adapters in diffusers' own Wan pipeline give what vfm-generate --lora gives."""
    from diffusers import WanPipeline

    from diffusion.checkpoint import load_checkpoint_tensors
    from diffusion.cli_generate import main as generate
    from diffusion.cli_train import main as train
    from diffusion.lora import is_adapter

    pipe_dir = _tiny_pipeline(tmp_path)
    run = tmp_path / "lora"
    # pixel data go through the pipeline's Wan VAE (5 frames: 1 + 4k), text through its UMT5
    assert train(["fit", "--config", "tiny", "--data", str(curated), "--out", str(run), "--steps", "3",
                  "--init-from", str(pipe_dir), "--set", "train.lora.rank=4", "--set", "train.lora.alpha=8",
                  "--set", "data.num_frames=5", "--set", "data.buckets=[[16, 16]]", "--set", "train.val_every=0",
                  "--set", "train.sample_every=0", "--set", "train.checkpoint_every=3",
                  "--set", "train.optim.lr=5e-2", "--set", "text.max_length=16",
                  "--set", "train.tensorboard=false"]) == 0
    ckpt = run / "checkpoints" / "step-0000003"
    saved, _ = load_checkpoint_tensors(ckpt, lambda n: True, prefer_ema=False)
    assert saved and all(is_adapter(n) for n in saved), sorted(saved)[:3]
    assert any(".lora_B." in n and v.abs().max() > 0 for n, v in saved.items())  # adapters did train
    out = tmp_path / "lora_export"
    assert train(["export", "--run", str(run), "--out", str(out)]) == 0
    assert (out / "pytorch_lora_weights.safetensors").is_file()

    # ours: the pipeline folder plus the exported adapters
    video = tmp_path / "ours.mp4"
    args = ["--prompt", "a red ball", "--frames", "5", "--height", "16", "--width", "16", "--steps", "3",
            "--guidance", "4.0", "--seed", "7"]
    assert generate(["--checkpoint", str(pipe_dir), "--lora", str(out), "--out", str(video), *args]) == 0
    from diffusion.generate import apply_lora, load_checkpoint_dir, sample_latents

    loaded = load_checkpoint_dir(pipe_dir)
    apply_lora(loaded.model, out)
    latents = sample_latents(loaded.model, loaded.text_encoder, loaded.vae, loaded.cfg, prompt="a red ball",
                             frames=5, height=16, width=16, steps=3, guidance=4.0, seed=7)
    ours = ((loaded.vae.decode(latents)[0] + 1) / 2).clamp(0, 1)  # (C, T, H, W) in [0, 1]

    pipe = WanPipeline.from_pretrained(str(pipe_dir))
    pipe.load_lora_weights(str(out))
    theirs = pipe(prompt="a red ball", negative_prompt="", height=16, width=16, num_frames=5,
                  num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(7),
                  output_type="pt", max_sequence_length=512).frames[0]  # (T, C, H, W)
    diff = (ours.permute(1, 0, 2, 3) - theirs.float()).abs().max().item()
    assert diff < 1e-4, diff
    # and the adapters matter: the base pipeline alone gives another video
    plain = load_checkpoint_dir(pipe_dir)
    base = sample_latents(plain.model, plain.text_encoder, plain.vae, plain.cfg, prompt="a red ball", frames=5,
                          height=16, width=16, steps=3, guidance=4.0, seed=7)
    assert (base - latents).abs().max().item() > 1e-3
    frames = np.asarray(theirs)
    assert frames.shape == (5, 3, 16, 16)
