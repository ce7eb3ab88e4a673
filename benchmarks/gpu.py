"""`python -m benchmarks gpu [--device cuda|cpu]`: the one script for a machine with an NVIDIA GPU.

Correctness first, then figures:
1. DiT in bf16 against float32 on the device (relative L2 error of the output; tolerance DIT_BF16_TOL:
   bf16 keeps 8 mantissa bits, a 1/256 relative step per operation, and the error grows slowly with depth).
2. The fused attention kernel of `parallel.local_attention` (CUDA: memory-efficient SDPA with its
   log-sum-exp; CPU: the flash kernel) inside ring attention (4 ranks simulated on one device: every query
   block against every key block, merged by LSE; backward from the final output and LSE) and inside
   Ulysses (heads split across 4 simulated ranks), against the float64 math reference: forward output,
   LSE and every gradient (tolerance ATTN_TOL[dtype]). Then the packed sequence's block-diagonal attention
   (`varlen_attention`: torch's variable-length flash kernel on CUDA in bf16, per-segment SDPA otherwise)
   against the float64 math per sample, forward and gradients.
3. Generation: one seeded video from a tiny model on the device against the same on the CPU (uint8
   frames; tolerance GEN_TOL levels of mean absolute difference, GEN_MAX_TOL at any pixel).
4. Figures: model FLOPs utilisation of wan-1.3b forward+backward in bf16 at 32,760 tokens (FLOPs counted
   from the config, peak 989 TFLOPS dense bf16 for an H100/H200); decode frames per second through DALI
   (when installed) against PyAV; TransNetV2 windows per second on the device.

`--device cpu` runs everything with small shapes (CI keeps the script alive); MFU is only reported on CUDA.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import BenchResult, median

DIT_BF16_TOL = 3e-2
ATTN_TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
GEN_TOL = 2.0
GEN_MAX_TOL = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu (small shapes)")
    parser.add_argument("--no-figures", action="store_true", help="correctness checks only")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ checks


def check_dit_bf16(device: torch.device, small: bool) -> dict:
    from diffusion.dit import DiTConfig, VideoDiT

    cfg = DiTConfig(in_channels=16, out_channels=16, dim=128 if small else 1536, ffn_dim=512 if small else 8960,
                    num_heads=4 if small else 12, num_layers=2 if small else 4, text_dim=128 if small else 4096,
                    freq_dim=256)
    torch.manual_seed(0)
    model = VideoDiT(cfg).to(device).eval()
    latent = (2, 8, 8) if small else (5, 30, 52)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, *latent, generator=g).to(device)
    t = torch.tensor([500.0], device=device)
    text = torch.randn(1, 32, cfg.text_dim, generator=g).to(device)
    with torch.no_grad():
        ref = model(x, t, text).float()
        model.to(torch.bfloat16)
        low = model(x.bfloat16(), t, text.bfloat16()).float()
    err = float((low - ref).norm() / ref.norm())
    return {"check": "DiT bf16 vs float32 (rel. L2)", "value": err, "tolerance": DIT_BF16_TOL,
            "ok": err <= DIT_BF16_TOL}


def _reference(q, k, v, scale):
    from parallel.local_attention import attn_block_forward

    q64, k64, v64 = (x.detach().double().requires_grad_(True) for x in (q, k, v))
    out, lse = attn_block_forward(q64, k64, v64, scale)
    return q64, k64, v64, out, lse


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_attention_kernels(device: torch.device, dtype: torch.dtype, small: bool) -> list[dict]:
    """Ring (4 ranks simulated: all block pairs merged by LSE) and Ulysses (heads over 4 ranks) through
    the fused kernel, against the float64 math."""
    from parallel.local_attention import fused_backward, fused_forward, fused_ok, merge

    ranks, heads, dim = 4, 4, 64
    seq = 4 * (64 if small else 1024)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, seq, heads, dim, generator=g).to(device, dtype) for _ in range(3))
    dout = torch.randn(1, seq, heads, dim, generator=g).to(device, dtype)
    scale = 1 / math.sqrt(dim)
    name = str(dtype).removeprefix("torch.")
    if not fused_ok(q):
        return [{"check": f"fused attention ({name})", "value": None, "tolerance": None, "ok": None,
                 "note": "no fused kernel for this device/dtype: the math path runs"}]
    q64, k64, v64, ref_out, ref_lse = _reference(q, k, v, scale)
    ref_out.backward(dout.double())
    tol = ATTN_TOL[dtype]
    rows = []

    # ring: query block r meets key blocks r, r-1, ... (the ring order), merged by LSE
    qs, ks, vs = (x.chunk(ranks, dim=1) for x in (q, k, v))
    outs, lses = [], []
    for r in range(ranks):
        out = lse = None
        for step in range(ranks):
            src = (r - step) % ranks
            o, s = fused_forward(qs[r], ks[src], vs[src], scale)
            out, lse = (o.float(), s) if out is None else merge(out, lse, o.float(), s)
        outs.append(out)
        lses.append(lse)
    ring_out, ring_lse = torch.cat(outs, 1), torch.cat(lses, 2)
    dq = torch.zeros_like(q, dtype=torch.float32)
    dk = torch.zeros_like(k, dtype=torch.float32)
    dv = torch.zeros_like(v, dtype=torch.float32)
    douts = dout.chunk(ranks, dim=1)
    n = seq // ranks
    for r in range(ranks):
        for src in range(ranks):
            gq, gk, gv = fused_backward(qs[r], ks[src], vs[src], outs[r].to(dtype), lses[r], douts[r], scale)
            dq[:, r * n:(r + 1) * n] += gq.float()
            dk[:, src * n:(src + 1) * n] += gk.float()
            dv[:, src * n:(src + 1) * n] += gv.float()
    errs = {"out": _rel(ring_out, ref_out), "lse": _rel(ring_lse, ref_lse), "dq": _rel(dq, q64.grad),
            "dk": _rel(dk, k64.grad), "dv": _rel(dv, v64.grad)}
    worst = max(errs.values())
    rows.append({"check": f"ring attention, fused kernel ({name}), 4 ranks simulated", "value": worst,
                 "tolerance": tol, "ok": worst <= tol, "note": " ".join(f"{k}={v:.1e}" for k, v in errs.items())})

    # Ulysses: after the all-to-all every rank holds the whole sequence for heads/ranks heads
    hs = heads // ranks
    u_out = torch.cat([fused_forward(q[:, :, i * hs:(i + 1) * hs], k[:, :, i * hs:(i + 1) * hs],
                                     v[:, :, i * hs:(i + 1) * hs], scale)[0].float() for i in range(ranks)], dim=2)
    err = _rel(u_out, ref_out)
    rows.append({"check": f"ulysses attention, fused kernel ({name}), 4 ranks simulated", "value": err,
                 "tolerance": tol, "ok": err <= tol})
    return rows


def check_packed_attention(device: torch.device, dtype: torch.dtype, small: bool) -> dict:
    """Block-diagonal attention of a packed sequence (`varlen_attention`: torch's variable-length flash
    kernel on CUDA in half precision, per-segment SDPA otherwise) against the float64 math per segment,
    forward and backward."""
    from parallel.local_attention import _varlen_kernel_ok, attn_block_forward, varlen_attention

    heads, dim = 4, 64
    lens = [37, 64, 5, 90] if small else [1500, 4096, 77, 2600]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, cu[-1], heads, dim, generator=g).to(device, dtype).requires_grad_(True)
               for _ in range(3))
    dout = torch.randn(1, cu[-1], heads, dim, generator=g).to(device, dtype)
    out = varlen_attention(q, k, v, cu)
    out.backward(dout)
    q64, k64, v64 = (x.detach().double().requires_grad_(True) for x in (q, k, v))
    scale = 1 / math.sqrt(dim)
    ref = torch.cat([attn_block_forward(q64[:, a:b], k64[:, a:b], v64[:, a:b], scale)[0]
                     for a, b in zip(cu, cu[1:])], dim=1)
    ref.backward(dout.double())
    errs = {"out": _rel(out, ref), "dq": _rel(q.grad, q64.grad), "dk": _rel(k.grad, k64.grad),
            "dv": _rel(v.grad, v64.grad)}
    worst = max(errs.values())
    name = str(dtype).removeprefix("torch.")
    kernel = "varlen kernel" if _varlen_kernel_ok(q) else "per-segment SDPA"
    tol = ATTN_TOL[dtype]
    return {"check": f"packed attention, {kernel} ({name}), {len(lens)} samples", "value": worst, "tolerance": tol,
            "ok": worst <= tol, "note": " ".join(f"{k}={v:.1e}" for k, v in errs.items())}


def _tiny_export(folder: Path) -> Path:
    """A tiny random model as a `vfm-train export` folder: diffusers weights, our config, a text encoder."""
    from diffusion.config import save_config, tiny
    from diffusion.dit import VideoDiT
    from diffusion.dit.convert import save_diffusers
    from diffusion.text_encoder import create_tiny_text_encoder

    cfg = tiny()
    torch.manual_seed(0)
    model = VideoDiT(cfg.model)
    save_diffusers(model, str(folder))
    (folder / "vfm").mkdir()
    save_config(cfg, folder / "vfm" / "config.yaml")
    create_tiny_text_encoder(str(folder / "vfm" / "text_encoder"), dim=cfg.text.dim or cfg.model.text_dim,
                             max_length=cfg.text.max_length)
    return folder


def _generate(folder: Path, device: torch.device):
    from diffusion.generate import load_checkpoint_dir, sample_latents, to_uint8_frames

    loaded = load_checkpoint_dir(folder)
    loaded.model.to(device)
    loaded.text_encoder.to(device)
    loaded.vae.to(device)
    latents = sample_latents(loaded.model, loaded.text_encoder, loaded.vae, loaded.cfg, prompt="a red ball",
                             steps=6, seed=3, device=device)
    return to_uint8_frames(loaded.vae.decode(latents)[0])


def check_generate(device: torch.device) -> dict:
    if device.type == "cpu":
        return {"check": "vfm-generate on the device vs the CPU", "value": None, "tolerance": GEN_TOL, "ok": None,
                "note": "the device is the CPU"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _tiny_export(Path(tmp) / "model")
        a = _generate(folder, device).astype("int32")
        b = _generate(folder, torch.device("cpu")).astype("int32")
    diff = abs(a - b)
    mean, worst = float(diff.mean()), int(diff.max())
    return {"check": "vfm-generate on the device vs the CPU (mean |uint8 diff|)", "value": mean,
            "tolerance": GEN_TOL, "ok": mean <= GEN_TOL and worst <= GEN_MAX_TOL, "note": f"max {worst}"}


# ------------------------------------------------------------------------------------------ figures


def figure_mfu(device: torch.device, repeats: int) -> dict:
    from benchmarks.dit import PEAKS, model_flops
    from diffusion.dit import VideoDiT, wan_1_3b_dit
    from diffusion.dit.config import DiTConfig

    if device.type == "cuda":
        cfg, latent, text_len, dtype = wan_1_3b_dit(), (21, 60, 104), 512, torch.bfloat16
    else:
        cfg = DiTConfig(in_channels=16, out_channels=16, dim=128, ffn_dim=512, num_heads=4, num_layers=2,
                        text_dim=128, freq_dim=256)
        latent, text_len, dtype = (2, 8, 8), 32, torch.float32
    torch.manual_seed(0)
    model = VideoDiT(cfg).to(device, dtype).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_channels, *latent, generator=g).to(device, dtype)
    t = torch.tensor([500.0], device=device)
    text = torch.randn(1, text_len, cfg.text_dim, generator=g).to(device, dtype)
    tokens = math.prod(s // p for s, p in zip(latent, cfg.patch_size))

    def step():
        model.zero_grad(set_to_none=True)
        model(x, t, text).float().square().mean().backward()
        _sync(device)

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    s = median(times)
    flops = model_flops(cfg, 1, tokens, text_len)
    peak = next((v for k, v in PEAKS.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)
    return {"check": f"DiT fwd+bwd {'wan-1.3b bf16' if device.type == 'cuda' else 'small fp32'} "
                     f"({tokens} tokens): TFLOPS", "value": flops / s / 1e12, "tolerance": None, "ok": None,
            "note": f"MFU {flops / s / peak:.3f}" if peak else "MFU needs a known GPU peak",
            "mfu": (flops / s / peak) if peak else None, "tokens_per_s": tokens / s}


def figure_decode(device: torch.device, repeats: int) -> dict:
    from dataload.backends.dali import dali_available
    from dataload.reader import VideoReader
    from dataload.synthetic import Shot, make_video

    size = (1920, 1080) if device.type == "cuda" else (320, 180)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        make_video(path, [Shot("pan", 48, seed=1)], width=size[0], height=size[1], fps=24)
        fps = {}
        backends = ["pyav"] + (["dali"] if device.type == "cuda" and dali_available() else [])
        for name in backends:
            times = []
            for _ in range(max(1, repeats // 2)):
                t0 = time.perf_counter()
                with VideoReader(path, backend=name) as r:
                    n = r.read().shape[0]
                times.append(time.perf_counter() - t0)
            fps[name] = n / median(times)
    note = " ".join(f"{k}={v:.0f} fps" for k, v in fps.items())
    if "dali" not in fps:
        note += " (DALI not installed or no CUDA: PyAV only)"
    return {"check": f"decode {size[0]}x{size[1]} frames/s (PyAV)", "value": fps["pyav"], "tolerance": None,
            "ok": None, "note": note, "decode_fps": fps}


def figure_transnet(device: torch.device, repeats: int) -> dict:
    import numpy as np

    from curate.split.config import SplitConfig
    from curate.split.transnet import TransNetSplitter

    det = TransNetSplitter(SplitConfig(device=device.type))
    frames = np.random.default_rng(0).integers(0, 255, (300 if device.type == "cuda" else 150, 27, 48, 3),
                                               dtype=np.uint8)
    det.predict(frames)
    times = []
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        det.predict(frames)
        _sync(device)
        times.append(time.perf_counter() - t0)
    windows = det.windows(torch.from_numpy(frames)).shape[0]
    return {"check": "TransNetV2 windows/s", "value": windows / median(times), "tolerance": None, "ok": None}


def run(args) -> BenchResult:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = device.type == "cpu"
    rows = [check_dit_bf16(device, small)]
    for dtype in ([torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]):
        rows += check_attention_kernels(device, dtype, small)
        rows.append(check_packed_attention(device, dtype, small))
    rows.append(check_generate(device))
    figures: dict = {}
    if not args.no_figures:
        repeats = max(1, args.repeats)
        for fn in (figure_mfu, figure_decode, figure_transnet):
            try:
                row = fn(device, repeats)
            except Exception as exc:  # a figure that cannot run here is reported, the others still run
                row = {"check": fn.__name__, "value": None, "tolerance": None, "ok": None,
                       "note": f"skipped: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"}
            rows.append(row)
            figures.update({k: v for k, v in row.items() if k in ("mfu", "tokens_per_s", "decode_fps")})
    failed = [r["check"] for r in rows if r.get("ok") is False]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    notes = [f"device: {name}", "correctness: " + ("all within tolerance" if not failed else f"FAILED: {failed}")]
    return BenchResult(name="gpu", columns=["check", "value", "tolerance", "ok", "note"],
                       rows=[{k: r.get(k) for k in ("check", "value", "tolerance", "ok", "note")} for r in rows],
                       notes=notes, extra={"device": name, "failed": failed, **figures})
