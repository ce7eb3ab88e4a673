"""VideoVAE: a tiny random AutoencoderKLWan saved to a temp folder and loaded through the real code."""

from __future__ import annotations

import pytest
import torch

from diffusion.vae import VAEConfig, VideoVAE, create_tiny_wan_vae


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return create_tiny_wan_vae(str(tmp_path_factory.mktemp("tiny_wan_vae")))


@pytest.fixture(scope="module")
def video():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 5, 32, 32, generator=g) * 2 - 1


def test_wan_encode_decode_shapes_and_normalisation(wan_dir, video):
    vae = VideoVAE(VAEConfig(kind="wan", path=wan_dir))
    assert (vae.latent_channels, vae.temporal_factor, vae.spatial_factor) == (4, 4, 8)
    z = vae.encode(video)
    assert z.shape == (1, 4, 2, 4, 4) == (1, *vae.latent_shape(5, 32, 32))
    # normalised with the model's own statistics: (mode - mean) / std
    raw = vae.model.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.model.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.model.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-6)
    assert not torch.allclose(z, raw, atol=1e-3)  # the statistics are not the identity
    out = vae.decode(z)
    assert out.shape == video.shape and out.min() >= -1 and out.max() <= 1
    # decode undoes the normalisation before the network
    want = vae.model.decode(z * std + mean, return_dict=False)[0].clamp(-1, 1)
    assert torch.allclose(out, want, atol=1e-6)
    assert vae.video_frames(2) == 5
    assert not any(p.requires_grad for p in vae.model.parameters())


def test_tiled_decode_approximates_untiled(wan_dir):
    video = torch.rand(1, 3, 1, 64, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1  # 2 tiles
    plain = VideoVAE(VAEConfig(kind="wan", path=wan_dir))
    tiled = VideoVAE(VAEConfig(kind="wan", path=wan_dir, tiling=True, tile_sample_min_height=48,
                               tile_sample_min_width=48, tile_sample_stride_height=32, tile_sample_stride_width=32))
    z = plain.encode(video)
    a, b = plain.decode(z), tiled.decode(z)
    err = (a - b).abs().mean().item()
    assert a.shape == b.shape
    assert err > 0  # the tiled path really ran (tiles differ at their seams)
    # a random decoder's receptive field exceeds the overlap, so agreement is approximate
    assert err < 0.25 * a.std().item()
    # frames no larger than one tile are decoded whole: identical to the untiled decode
    small = plain.encode(video[..., :48, :48])
    assert torch.equal(plain.decode(small), tiled.decode(small))


def test_pixel_space_round_trip(tmp_path):
    vae = VideoVAE(VAEConfig(kind="pixel", space_to_depth=2))
    x = torch.rand(2, 3, 3, 8, 12) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 12, 3, 4, 6) and vae.latent_channels == 12
    assert torch.equal(vae.decode(z), x)
    # space-to-depth keeps each 2x2 pixel block together in the channels
    assert torch.equal(z[0, :4, 0, 0, 0], x[0, 0, 0, :2, :2].flatten())
    vae.save(str(tmp_path / "p"))
    again = VideoVAE.load(str(tmp_path / "p"))
    assert again.config == vae.config


def test_pixel_space_downsampled(tmp_path):
    """downsample d: the latents are d x d area means (then space-to-depth); decoding upsamples them
    bilinearly, so a picture that is flat over d x d squares comes back (inside, away from its edges)."""
    vae = VideoVAE(VAEConfig(kind="pixel", space_to_depth=2, downsample=4))
    assert vae.latent_shape(5, 32, 48) == (12, 5, 4, 6) and vae.spatial_factor == 8
    x = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    z = vae.encode(x)
    assert torch.allclose(z[0, 0, 0, 0, 0], x[0, 0, 0, :4, :4].mean())
    assert torch.allclose(z[0, 3, 0, 0, 0], x[0, 0, 0, 4:8, 4:8].mean())  # the 2x2 group of 4x4 squares
    flat = torch.zeros(1, 3, 2, 32, 48)
    flat[..., 8:24, 16:40] = 0.8
    back = vae.decode(vae.encode(flat))
    assert back.shape == flat.shape
    assert torch.allclose(back[..., 12:20, 20:36], flat[..., 12:20, 20:36], atol=1e-6)
    assert torch.allclose(back.mean(), flat.mean(), atol=1e-6)  # interpolation keeps the mean inside
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.latent_shape(5, 36, 48)
    vae.save(str(tmp_path / "d"))
    assert VideoVAE.load(str(tmp_path / "d")).config.downsample == 4
    with pytest.raises(ValueError, match="downsample"):
        VAEConfig(kind="pixel", downsample=0)


def test_save_and_load_wan(wan_dir, video, tmp_path):
    vae = VideoVAE(VAEConfig(kind="wan", path=wan_dir))
    vae.save(str(tmp_path / "run_vae"))
    again = VideoVAE.load(str(tmp_path / "run_vae"))
    assert torch.equal(vae.encode(video), again.encode(video))


def test_bad_inputs(wan_dir):
    vae = VideoVAE(VAEConfig(kind="wan", path=wan_dir))
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        vae.encode(torch.zeros(1, 3, 4, 64, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 5, 60, 64))
    with pytest.raises(ValueError, match="needs a path"):
        VAEConfig(kind="wan")
    with pytest.raises(ValueError, match="kind"):
        VAEConfig(kind="sd")
    with pytest.raises(FileNotFoundError):
        VideoVAE.load("/nonexistent/vae")
