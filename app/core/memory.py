"""Fewer glibc malloc arenas for the server's processes.

glibc gives threads their own malloc arenas (up to 8 per core) as they contend for the heap. A
server process has many threads (the event loop, the model thread and its OpenMP helpers, the
decoding threads of anyio's pool, which grows on demand), and memory freed in one arena is not
reused by another: resident memory then steps up by tens of MiB whenever a new thread starts
allocating. Two arenas bound that at a small cost in allocator contention (the tensors' big
buffers are mmap'ed outside the arenas anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util

ARENAS = 2
M_ARENA_MAX = -8
"""``mallopt`` parameter number of M_ARENA_MAX in glibc's malloc.h."""


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap the arenas of this process (glibc only; arenas that exist stay). True when set."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
