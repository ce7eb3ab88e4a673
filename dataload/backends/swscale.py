"""Pixel conversion straight into the caller's array, through the libswscale that PyAV bundles.

PyAV's `frame.to_ndarray("rgb24")` makes a new swscale context and a new frame for every picture, and
the result must then be copied into the output tensor. Calling `sws_scale` (ctypes, GIL released)
with the output slot as destination does one pass over the pixels and nothing else; the result is
bit-identical to PyAV's for limited-range video (tests check it). When the library or a pixel
format is not available, `SwsConverter.create` returns None and the caller uses PyAV's path.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache

import av
import numpy as np

SWS_BILINEAR = 2
SWS_BICUBIC = 4
SWS_AREA = 0x20

class _Lib:
    def __init__(self, sws: ctypes.CDLL, avutil: ctypes.CDLL):
        self.p4 = ctypes.c_void_p * 4
        self.i4 = ctypes.c_int * 4
        sws.sws_getContext.argtypes = [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3
        sws.sws_getContext.restype = ctypes.c_void_p
        sws.sws_scale.argtypes = [ctypes.c_void_p, self.p4, self.i4, ctypes.c_int, ctypes.c_int, self.p4, self.i4]
        sws.sws_scale.restype = ctypes.c_int
        sws.sws_getCoefficients.argtypes = [ctypes.c_int]
        sws.sws_getCoefficients.restype = ctypes.c_void_p
        sws.sws_setColorspaceDetails.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                 ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        sws.sws_setColorspaceDetails.restype = ctypes.c_int
        sws.sws_freeContext.argtypes = [ctypes.c_void_p]
        avutil.av_get_pix_fmt.argtypes = [ctypes.c_char_p]
        avutil.av_get_pix_fmt.restype = ctypes.c_int
        self.sws = sws
        self.avutil = avutil

    def pix_fmt(self, name: str) -> int:
        return int(self.avutil.av_get_pix_fmt(name.encode()))


@lru_cache(maxsize=1)
def _lib() -> _Lib | None:
    """PyAV's own libswscale/libavutil (already loaded by `import av`), or None."""
    root = os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs")
    sws = sorted(glob.glob(os.path.join(root, "libswscale*.so*")))
    avutil = sorted(glob.glob(os.path.join(root, "libavutil*.so*")))
    if not sws or not avutil:
        return None
    try:
        return _Lib(ctypes.CDLL(sws[0]), ctypes.CDLL(avutil[0]))
    except (OSError, AttributeError):
        return None


class SwsConverter:
    """One swscale context: (src size, format, colour space, range) -> (dst size, rgb24 or gray)."""

    def __init__(self, lib: _Lib, ctx: int, key: tuple, dst_w: int, dst_h: int, channels: int):
        self._lib, self._ctx, self.key = lib, ctx, key
        self.dst_w, self.dst_h, self.channels = dst_w, dst_h, channels
        self._scratch: np.ndarray | None = None

    @staticmethod
    def key_of(frame: av.VideoFrame) -> tuple:
        return (frame.width, frame.height, frame.format.name, int(frame.colorspace), int(frame.color_range))

    @classmethod
    def create(cls, frame: av.VideoFrame, dst_w: int, dst_h: int, dst_format: str = "rgb24",
               flags: int = SWS_BILINEAR) -> "SwsConverter | None":
        lib = _lib()
        # swscale's SIMD converters work in blocks of up to 32 pixels and, when a row is not a whole
        # number of blocks, either write past it or leave its last pixels unconverted: other widths
        # take PyAV's path.
        if lib is None or len(frame.planes) > 4 or frame.width % 32 or dst_w % 32:
            return None
        src_fmt, dst_fmt = lib.pix_fmt(frame.format.name), lib.pix_fmt(dst_format)
        if src_fmt < 0 or dst_fmt < 0:
            return None
        ctx = lib.sws.sws_getContext(frame.width, frame.height, src_fmt, dst_w, dst_h, dst_fmt, flags,
                                     None, None, None)
        if not ctx:
            return None
        # swscale's coefficient tables are indexed like AVColorSpace (unknown values: BT.601), as PyAV does
        cs = lib.sws.sws_getCoefficients(int(frame.colorspace))
        src_full = 1 if (int(frame.color_range) == 2 or frame.format.name.startswith("yuvj")) else 0
        # 0 on success; -1 when the formats take no colour details (e.g. gray in): keep the defaults
        lib.sws.sws_setColorspaceDetails(ctx, cs, src_full, cs, 1, 0, 1 << 16, 1 << 16)
        channels = 3 if dst_format == "rgb24" else 1
        return cls(lib, ctx, cls.key_of(frame), dst_w, dst_h, channels)

    def __call__(self, frame: av.VideoFrame, dst: np.ndarray) -> np.ndarray:
        """Convert `frame` into `dst` (C-contiguous rows, shape (dst_h, dst_w[, 3]), uint8).

        swscale's SIMD writes whole blocks of pixels, so a row can run a few bytes past its end. That
        lands in the next row (written later) except after the last row: the last rows therefore go
        through a padded scratch buffer and are copied in. Needs a same-size conversion (rows map 1:1).
        """
        if (self.dst_w, self.dst_h) != (frame.width, frame.height):
            raise ValueError("direct conversion writes rows in place; it does not resize")
        if dst.strides[-1] != 1 or (dst.ndim == 3 and dst.strides[1] != 3):
            raise ValueError("destination rows must be contiguous")
        planes = frame.planes
        bufs = [np.frombuffer(p, np.uint8) for p in planes]  # keeps the planes alive for the call
        n = len(bufs)
        src = self._lib.p4(*[b.ctypes.data for b in bufs], *([None] * (4 - n)))
        src_stride = self._lib.i4(*[p.line_size for p in planes], *([0] * (4 - n)))
        h, row = frame.height, dst.strides[0]
        tail = 2 if h > 2 and h % 2 == 0 else h  # an even split keeps 4:2:0 chroma rows whole
        head = h - tail
        if head:
            self._scale(src, src_stride, 0, head, dst.ctypes.data, row)
        if self._scratch is None or self._scratch.size < tail * row + 256:
            self._scratch = np.empty(tail * row + 256, np.uint8)
        if head:  # a slice's source pointers start at its own first row (per plane: subsampled rows)
            src = self._lib.p4(*[b.ctypes.data + (head * p.height // h) * p.line_size
                                 for b, p in zip(bufs, planes)], *([None] * (4 - n)))
        # swscale writes slice rows at base + y * stride: aim that at the scratch buffer
        self._scale(src, src_stride, head, tail, self._scratch.ctypes.data - head * row, row)
        rows = dst.reshape(h, -1)[head:]
        rows[...] = self._scratch[: tail * row].reshape(tail, row)[:, : rows.shape[1]]
        return dst

    def _scale(self, src, src_stride, y: int, rows: int, base: int, stride: int) -> None:
        out = self._lib.p4(base, None, None, None)
        self._lib.sws.sws_scale(self._ctx, src, src_stride, y, rows, out, self._lib.i4(stride, 0, 0, 0))

    def close(self) -> None:
        if self._ctx:
            self._lib.sws.sws_freeContext(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
