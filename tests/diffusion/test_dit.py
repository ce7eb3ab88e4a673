"""VideoDiT against diffusers' WanTransformer3DModel: converted weights give the same outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion.dit import DiTConfig, VideoDiT, tiny_dit, wan_1_3b_dit, wan_14b_dit
from diffusion.dit.convert import (
    config_from_diffusers,
    from_diffusers,
    save_diffusers,
    to_diffusers_config,
    to_diffusers_state_dict,
)

CFG = DiTConfig(in_channels=4, out_channels=4, dim=48, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32,
                freq_dim=32, rope_max_seq_len=64)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    # diffusers initialises norms to ones and some biases to zero; random values make every tensor count
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.5) + (1.0 if p.ndim == 1 else 0))


@pytest.fixture(scope="module")
def reference():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    ref = WanTransformer3DModel(**to_diffusers_config(CFG)).eval()
    _randomise(ref, 1)
    return ref


def _inputs(shape, text_len=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    t = torch.rand(shape[0], generator=g) * 1000
    text = torch.randn(shape[0], text_len, CFG.text_dim, generator=g)
    return x, t, text


@pytest.mark.parametrize("shape", [(2, 4, 3, 8, 6), (1, 4, 2, 4, 10)])
def test_parity_with_diffusers(reference, shape):
    model = from_diffusers(reference).eval()
    x, t, text = _inputs(shape)
    with torch.no_grad():
        want = reference(x, t, text, return_dict=False)[0]
        got = model(x, t, text)
    assert got.shape == x.shape
    assert want.abs().max() > 0.1  # a real signal, not an all-zero output
    assert (got - want).abs().max().item() < 1e-5


def test_parity_detects_a_wrong_weight(reference):
    # the parity check above would fail if any tensor were mapped wrongly: perturb one and see it
    model = from_diffusers(reference).eval()
    with torch.no_grad():
        model.blocks[1].cross_attn.v.weight[3, 2] += 1e-2  # a V weight of the last block
    x, t, text = _inputs((1, 4, 2, 4, 4))
    with torch.no_grad():
        diff = (model(x, t, text) - reference(x, t, text, return_dict=False)[0]).abs().max().item()
    assert diff > 1e-5


def test_state_dict_round_trip(reference):
    model = from_diffusers(reference)
    sd = to_diffusers_state_dict(model)
    ref_sd = reference.state_dict()
    assert set(sd) == set(ref_sd)
    for k, v in ref_sd.items():
        assert torch.equal(sd[k], v), k
    assert config_from_diffusers(reference.config) == CFG


def test_folder_round_trip_through_diffusers(reference, tmp_path):
    from diffusers import WanTransformer3DModel

    model = from_diffusers(reference)
    save_diffusers(model, str(tmp_path / "wan"))
    # diffusers itself loads what we wrote, and we load it back
    back = WanTransformer3DModel.from_pretrained(str(tmp_path / "wan")).eval()
    again = from_diffusers(str(tmp_path / "wan")).eval()
    x, t, text = _inputs((1, 4, 2, 4, 4), seed=3)
    with torch.no_grad():
        want = reference(x, t, text, return_dict=False)[0]
        assert (back(x, t, text, return_dict=False)[0] - want).abs().max().item() < 1e-5
        assert (again(x, t, text) - want).abs().max().item() < 1e-5
    # a pipeline folder (weights under transformer/) loads too
    save_diffusers(model, str(tmp_path / "pipe" / "transformer"))
    assert from_diffusers(str(tmp_path / "pipe")).config == CFG


def test_converter_refuses_incomplete_or_foreign_weights(reference):
    sd = dict(reference.state_dict())
    with pytest.raises(KeyError, match="does not use"):
        from_diffusers({**sd, "blocks.0.attn2.add_k_proj.weight": torch.zeros(1)}, CFG)
    sd.pop("blocks.1.ffn.net.2.bias")
    with pytest.raises(KeyError, match="lacks"):
        from_diffusers(sd, CFG)


def test_text_mask_zeroes_padding_like_wan(reference):
    # Wan feeds zero-padded text without a key mask: our mask must reproduce exactly that
    model = from_diffusers(reference).eval()
    x, t, text = _inputs((2, 4, 2, 4, 4), text_len=6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    zeroed = text * mask[..., None]
    with torch.no_grad():
        want = reference(x, t, zeroed, return_dict=False)[0]
        got = model(x, t, text, mask)
    assert (got - want).abs().max().item() < 1e-5


def test_text_attention_mask_ignores_padded_tokens():
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, text_attention_mask=True)
    model = VideoDiT(cfg).eval()
    x, t, text = _inputs((1, 4, 2, 4, 4), text_len=5)
    mask = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        full = model(x, t, text, mask)
        short = model(x, t, text[:, :3])
    assert (full - short).abs().max().item() < 1e-5


def test_activation_checkpointing_same_grads():
    torch.manual_seed(0)
    model = VideoDiT(CFG).double()
    x, t, text = _inputs((2, 4, 2, 4, 4))
    x, text = x.double(), text.double()

    def grads():
        model.zero_grad()
        model(x, t, text).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.enable_activation_checkpointing()
    ckpt = grads()
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], rtol=1e-10, atol=1e-12), n


def test_presets_have_wan_sizes():
    assert tiny_dit().num_layers <= 4 and 64 <= tiny_dit().dim <= 128
    m13, m14 = wan_1_3b_dit(), wan_14b_dit()
    assert (m13.dim, m13.num_heads, m13.num_layers, m13.ffn_dim) == (1536, 12, 30, 8960)
    assert (m14.dim, m14.num_heads, m14.num_layers, m14.ffn_dim) == (5120, 40, 40, 13824)
    # parameter count of 1.3B without building it: count a meta-device model
    with torch.device("meta"):
        n = VideoDiT(m13).num_parameters()
    assert 1.3e9 < n < 1.45e9


def test_bad_inputs_raise_clear_errors():
    model = VideoDiT(CFG)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        model(torch.randn(1, 4, 2, 5, 4), torch.zeros(1), torch.randn(1, 3, CFG.text_dim))
    with pytest.raises(ValueError, match="expected x"):
        model(torch.randn(1, 3, 2, 4, 4), torch.zeros(1), torch.randn(1, 3, CFG.text_dim))
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        model(torch.randn(1, 4, 2, 4, 200), torch.zeros(1), torch.randn(1, 3, CFG.text_dim))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DiTConfig(dim=50, num_heads=3)
    with pytest.raises(ValueError, match="unsupported Wan variant"):
        config_from_diffusers({**to_diffusers_config(CFG), "image_dim": 1280})


@pytest.mark.gpu
def test_parity_on_cuda_float32_and_bf16(reference):
    ref = reference.to("cuda")
    model = from_diffusers(reference).to("cuda").eval()
    x, t, text = (v.to("cuda") for v in _inputs((1, 4, 4, 16, 16)))
    with torch.no_grad():
        want = ref(x, t, text, return_dict=False)[0]
        assert (model(x, t, text) - want).abs().max().item() < 1e-3  # SDPA kernels differ from CPU's
        with torch.autocast("cuda", dtype=torch.bfloat16):
            want16 = ref(x, t, text, return_dict=False)[0].float()
            got16 = model(x, t, text).float()
    assert ((got16 - want16).abs().max() / want16.abs().max()).item() < 3e-2
    reference.to("cpu")
