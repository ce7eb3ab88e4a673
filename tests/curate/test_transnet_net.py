"""The inference rewrite of TransNetV2 (curate/split/transnet_net.py) against the package's network."""

from __future__ import annotations

import pytest
import torch

from curate.stages.split.transnet import _model_class, weights_path
from curate.stages.split.transnet_net import FastTransNetV2


@pytest.fixture(scope="module")
def nets():
    was = torch.are_deterministic_algorithms_enabled()
    package = _model_class()(device="cpu")
    torch.use_deterministic_algorithms(was)
    return package, FastTransNetV2.from_file(weights_path())


def _clip(n: int, seed: int = 0) -> torch.Tensor:
    """Frames with structure (a drifting gradient, a moving square) and a hard cut halfway."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(27.0), torch.arange(48.0), indexing="ij")
    out = []
    for t in range(n):
        shot = t >= n // 2
        base = torch.stack([xx * 5 + t, yy * 9, 255 - xx * 4 - t]) if not shot else torch.stack([yy * 8, 200 - yy * 3, xx * 2 + 3 * t])
        x0 = (3 * t) % 40
        base[:, 5:15, x0:x0 + 8] = 230.0 if not shot else 20.0
        out.append((base + torch.randint(-6, 7, base.shape, generator=g)).clamp(0, 255).permute(1, 2, 0))
    return torch.stack(out).to(torch.uint8)


def test_matches_package_network(nets):
    package, fast = nets
    windows = torch.stack([_clip(100, 1), _clip(100, 2)])
    with torch.inference_mode():
        want, _ = package.predict_raw(windows)
    want = want[..., 0]
    got = fast.single_frame(windows)
    assert got.shape == (2, 100)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert want[:, 49].min() > 0.5 and want[:, 10].max() < 0.5  # the cut is seen, so the test can fail
    torch.testing.assert_close(fast.single_frame(windows, slice(25, 75)), got[:, 25:75], atol=1e-6, rtol=0)


def test_stream_reuses_overlap_exactly(nets):
    _, fast = nets
    frames = _clip(250, 3)
    windows = frames.unfold(0, 100, 50).permute(0, 4, 1, 2, 3)  # 4 windows, step 50
    one_by_one = torch.cat([fast.single_frame(w[None], slice(25, 75)) for w in windows])
    streamed, carry = fast.stream(windows, slice(25, 75), 50)
    torch.testing.assert_close(streamed, one_by_one, atol=1e-6, rtol=0)
    # continuing from a carry is the same as one stream
    head, c = fast.stream(windows[:2], slice(25, 75), 50)
    tail, _ = fast.stream(windows[2:], slice(25, 75), 50, carry=c)
    torch.testing.assert_close(torch.cat([head, tail]), streamed, atol=1e-6, rtol=0)


def test_rejects_wrong_input(nets):
    _, fast = nets
    with pytest.raises(ValueError, match="uint8 windows"):
        fast.single_frame(torch.zeros(1, 100, 27, 48, 3))
    with pytest.raises(ValueError, match="uint8 windows"):
        fast.stream(torch.zeros(1, 100, 48, 27, 3, dtype=torch.uint8), slice(25, 75), 50)
