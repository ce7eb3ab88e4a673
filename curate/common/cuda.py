"""Whether this machine has a CUDA device, without importing torch on a machine that has none.

`auto` choices (the splitter, model devices, GPU actors) ask this first: the CUDA driver (libcuda) is
asked for its devices in a few milliseconds; only where it reports one is torch imported to confirm that
it can use it (a CPU-only torch build cannot). A CPU-only machine never pays torch's import for it.
"""

from __future__ import annotations

import ctypes
import functools


@functools.lru_cache(maxsize=1)
def cuda_present() -> bool:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    try:
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return False
    except AttributeError:
        return False
    import torch

    return bool(torch.cuda.is_available())
