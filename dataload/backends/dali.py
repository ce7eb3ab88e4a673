"""DALI backend (GPU decode through NVDEC), behind an import guard: needs the `[gpu]` extra
(nvidia-dali-cuda130) and a CUDA device. Frame numbers and times are PyAV's packet times, as for
decord; selection, resizing, rotation and luma happen on the decoded frames like the other backends.
"""

from __future__ import annotations

import numpy as np

from dataload.backends.decord import packet_times
from dataload.backends.pyav import PyAVSource, resolve_size
from dataload.backends.selection import GridSelector
from dataload.errors import VideoError
from dataload.files import read_regular
from dataload.video_info import display_size

# What NVDEC decodes in DALI's video decoder.
DALI_CODECS = frozenset({"h264", "hevc", "vp9", "av1", "mpeg4"})


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def open_dali(pyav: PyAVSource):
    """A DaliSource, None for a codec NVDEC does not take (PyAV reads it); a clear error when DALI
    or the GPU is missing, since the user asked for it by name."""
    if not dali_available():
        raise VideoError("backend 'dali' needs nvidia-dali (pip install 'vfm-pipeline[gpu]') and a CUDA GPU")
    if pyav.strict or pyav.codec not in DALI_CODECS:
        return None
    return DaliSource(pyav)


class DaliSource:
    """Decodes the whole stream on the GPU once, then serves selections from it."""

    def __init__(self, pyav: PyAVSource):
        self.pyav = pyav
        self.path = pyav.path
        self.times = packet_times(self.path, pyav.stream_index)
        self.last_pass_errors = 0
        self._frames: np.ndarray | None = None
        if pyav.rotation is None:
            for _ in pyav.frames():
                break
        self.rotation = pyav.rotation or 0

    def _decode_all(self) -> np.ndarray:
        if self._frames is None:
            from nvidia.dali import fn, pipeline_def, types

            data = np.frombuffer(read_regular(self.path, "video"), dtype=np.uint8)

            @pipeline_def(batch_size=1, num_threads=1, device_id=0)
            def pipe():
                encoded = fn.external_source(source=lambda: [data], dtype=types.UINT8, cycle=False)
                return fn.experimental.decoders.video(encoded, device="mixed")

            p = pipe()
            p.build()
            (out,) = p.run()
            self._frames = np.asarray(out.as_cpu().at(0))
        return self._frames

    def _convert(self, idx: np.ndarray, size, luma: bool) -> list[np.ndarray]:
        import cv2

        allf = self._decode_all()
        if idx.size and int(idx.max()) >= len(allf):
            raise VideoError(f"{self.path}: frame index {int(idx.max())} out of range "
                             f"(the video has {len(allf)} decoded frames)")
        ch, cw = allf.shape[1:3]
        disp_w, disp_h = display_size(cw, ch, self.pyav.sar, self.rotation)
        out_h, out_w = resolve_size(size, disp_h, disp_w)
        sw, sh = (out_h, out_w) if self.rotation in (90, 270) else (out_w, out_h)
        k = -(self.rotation // 90)
        out = []
        for i in idx:
            a = allf[int(i)]
            if (sw, sh) != (cw, ch):
                a = cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA if sw * sh < cw * ch else cv2.INTER_CUBIC)
            if luma:
                a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
            if k % 4:
                a = np.ascontiguousarray(np.rot90(a, k))
            out.append(a)
        return out

    def read_indices(self, indices: np.ndarray, size, luma: bool) -> list[np.ndarray]:
        return self._convert(indices, size, luma)

    def read_grid(self, selector: GridSelector, start, size, luma: bool) -> list[np.ndarray]:
        t = self.times
        cand = [i for i in range(t.size) if (start is None or t[i] >= start - 1e-9)
                and (selector.end is None or t[i] < selector.end - 1e-9)]
        picked: list[int] = []
        for i in cand:
            picked += selector.feed(i, float(t[i]))
        if cand:
            step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
            last = cand[-1]
            picked += selector.finish(float(t[last]) + step if last == t.size - 1 else float(t[last + 1]))
        return self._convert(np.asarray(picked, dtype=np.int64), size, luma)

    def iter_range(self, start, end, size, luma: bool):
        t = self.times
        for i in range(t.size):
            if (start is None or t[i] >= start - 1e-9) and (end is None or t[i] < end - 1e-9):
                yield i, float(t[i]), self._convert(np.asarray([i]), size, luma)[0]

    def close(self) -> None:
        self._frames = None
