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

    @staticmethod
    def key_of(frame: av.VideoFrame) -> tuple:
        return (frame.width, frame.height, frame.format.name, int(frame.colorspace), int(frame.color_range))

    @classmethod
    def create(cls, frame: av.VideoFrame, dst_w: int, dst_h: int, dst_format: str = "rgb24",
               flags: int = SWS_BILINEAR) -> "SwsConverter | None":
        lib = _lib()
        if lib is None or len(frame.planes) > 4:
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
        """Convert `frame` into `dst` (C-contiguous rows, shape (dst_h, dst_w[, 3]), uint8)."""
        planes = frame.planes
        bufs = [np.frombuffer(p, np.uint8) for p in planes]  # keeps the planes alive for the call
        n = len(bufs)
        src = self._lib.p4(*[b.ctypes.data for b in bufs], *([None] * (4 - n)))
        src_stride = self._lib.i4(*[p.line_size for p in planes], *([0] * (4 - n)))
        if dst.strides[-1] != 1 or (dst.ndim == 3 and dst.strides[1] != 3):
            raise ValueError("destination rows must be contiguous")
        out = self._lib.p4(dst.ctypes.data, None, None, None)
        out_stride = self._lib.i4(dst.strides[0], 0, 0, 0)
        self._lib.sws.sws_scale(self._ctx, src, src_stride, 0, frame.height, out, out_stride)
        return dst

    def close(self) -> None:
        if self._ctx:
            self._lib.sws.sws_freeContext(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
