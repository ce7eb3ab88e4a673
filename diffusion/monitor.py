"""Training you can watch: TensorBoard event files in RUN/tb/ beside metrics.jsonl (rank 0 only).

Scalars: train/loss, train/lr, train/grad_norm, train/samples_per_s, train/tokens_per_s, train/step_time_s,
train/data_time_s, val/loss. Images: samples/<k> (a strip of frames of each sample video made at
`train.sample_every`). On by default; `train.tensorboard=false` turns it off. A resumed run purges
the events after its restored step, as metrics.jsonl drops its lines after it.

    tensorboard --logdir RUN/tb
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

TB_DIR = "tb"
# metrics.jsonl key -> TensorBoard tag
SCALARS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
           "samples_per_s": "train/samples_per_s", "tokens_per_s": "train/tokens_per_s",
           "step_time_s": "train/step_time_s", "data_time_s": "train/data_time_s", "val_loss": "val/loss"}


class TrainMonitor:
    """Writes scalars and sample strips for one run; every method is a no-op when disabled."""

    def __init__(self, run: str | Path, enabled: bool = True, start_step: int = 0):
        self.writer = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported only by runs that log

        # purge_step: events after the restored step belong to the run that was interrupted
        self.writer = SummaryWriter(str(Path(run) / TB_DIR), purge_step=start_step + 1 if start_step else None,
                                    flush_secs=10)

    def scalars(self, metrics: dict) -> None:
        if self.writer is None:
            return
        step = int(metrics["step"])
        for key, tag in SCALARS.items():
            value = metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(tag, float(value), step)

    def frames(self, tag: str, frames: np.ndarray, step: int, max_frames: int = 8) -> None:
        """frames (T, H, W, 3) uint8 -> one image: up to `max_frames` frames side by side."""
        if self.writer is None:
            return
        self.writer.add_image(tag, frame_strip(frames, max_frames), step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def frame_strip(frames: np.ndarray, max_frames: int = 8, gap: int = 1) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (H, n*(W+gap)-gap, 3): evenly spaced frames, side by side on white."""
    frames = np.asarray(frames)
    t, h, w, _ = frames.shape
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    out = np.full((h, len(idx) * (w + gap) - gap, 3), 255, np.uint8)
    for k, i in enumerate(idx):
        out[:, k * (w + gap):k * (w + gap) + w] = frames[i]
    return out


def progress_bar(total: int, desc: str, unit: str = "step", enabled: bool = True):
    """A tqdm bar on stderr, silent when stderr is not a terminal (or when not `enabled`, e.g. rank > 0)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, leave=False)
