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
import functools

ARENAS = 2
M_ARENA_MAX = -8
"""``mallopt`` parameter number of M_ARENA_MAX in glibc's malloc.h."""


@functools.cache
def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap the arenas of this process (glibc only; arenas that exist stay), once per process
    and value. True when set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):  # no mallopt (macOS): nothing to cap
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
