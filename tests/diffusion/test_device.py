"""One device decision per rank: a CPU job builds gloo groups only, and the model, the encoders and every
tensor of a training step sit on the chosen device; VFM_DEVICE forces or refuses a device."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.distributed import run_ranks


def _job_body(rank, world_size, text_dir):
    import torch.distributed as dist

    from diffusion.config import tiny
    from diffusion.encoders import Conditioner
    from diffusion.fit import FitPlan, build_model
    from diffusion.trainer import Trainer, build_parallel_state
    from parallel.device import rank_device

    decision = rank_device()
    cfg = tiny()
    par = build_parallel_state(1, world_size // 2, "ulysses", tp=2)
    plan = FitPlan(run="unused", sources=[], steps=1, stop_after=None, resume=False)
    model = build_model(cfg, par, decision.device, plan)
    conditioner = Conditioner(cfg, text_dir, decision.device)
    trainer = Trainer(model, cfg.train, cfg.flow, total_steps=1, par=par, device=decision.device,
                      null_text=conditioner.encode_text([""]))
    video = torch.randint(0, 255, (1, 8, 3, 32, 32), dtype=torch.uint8)
    batch = conditioner({"video": video, "caption": ["a red ball"]})
    trainer.train_step(0, batch)
    groups = [dist.get_backend(), dist.get_backend(par.dp_group), dist.get_backend(par.mesh.get_group()),
              dist.get_backend(par.tp_mesh.get_group())]
    devices = {t.device.type for t in trainer.model.state_dict().values()}
    devices |= {p.grad.device.type for p in trainer.model.parameters() if p.grad is not None}
    devices |= {p.device.type for p in conditioner.text_encoder.model.parameters()}
    devices |= {t.device.type for t in batch.values() if torch.is_tensor(t)}
    devices |= {t.device.type for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)}
    return {"device": decision.device.type, "backend": decision.backend, "groups": groups, "devices": devices}


@pytest.mark.distributed
def test_a_cpu_job_never_builds_nccl_and_keeps_everything_on_the_cpu(tmp_path, monkeypatch):
    from diffusion.text_encoder import create_tiny_text_encoder

    monkeypatch.setenv("VFM_DEVICE", "cpu")
    text_dir = create_tiny_text_encoder(str(tmp_path / "te"), dim=64, max_length=32)
    for r in run_ranks(_job_body, world_size=2, kwargs={"text_dir": text_dir}):
        assert r["device"] == "cpu" and r["backend"] == "gloo"
        assert set(r["groups"]) == {"gloo"}, r["groups"]
        assert r["devices"] == {"cpu"}, r["devices"]


def test_device_override(monkeypatch):
    from parallel.device import backend, rank_device, use_cuda

    monkeypatch.setenv("VFM_DEVICE", "cpu")
    assert rank_device().device == torch.device("cpu") and backend() == "gloo"
    monkeypatch.setenv("VFM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        use_cuda()
    if not torch.cuda.is_available():
        monkeypatch.setenv("VFM_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            use_cuda()
