"""How a CPU rank's freed tensors go back to the operating system.

glibc's malloc serves a large block with its own mmap only above a threshold that it raises every time
such a block is freed (up to 32 MiB). After the first freed weight or gradient of a few MiB, later
blocks of that size come from the heap, and once freed they stay in the process as fragmented arenas:
a sharded rank that gathers, uses and frees every block's full weights keeps hundreds of MiB it no
longer holds, so its resident memory does not follow its live tensors (`benchmarks memory` measured
0.60x of one process for 2 FSDP ranks with the dynamic threshold, 0.58x with a fixed one). A fixed
threshold keeps every block at least that large on its own mapping, returned when freed; smaller
allocations (activations of small models, Python objects) stay on the heap, where reuse is cheap.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
LARGE_BLOCK = 4 << 20  # bytes: model weights, gradients and gathered shards are far above this


def map_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process (it then stops moving). True when
    the C library took it; False where there is no glibc `mallopt` (macOS, musl ignore it)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1
