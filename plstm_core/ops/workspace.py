"""Tensors the CPU grid-mix forms keep across calls: scratch buffers (when no gradient is
recorded) and cached constants (index tensors, masks).

A forward of pLSTM-Vis at 24×24 tokens allocates two 4 MB matrices per layer (the summed gating
matrix and the attention-like scores). glibc serves blocks of that size with fresh ``mmap``
pages, and the page faults of touching them cost about as much as building the matrix. A
thread keeps one buffer per name here and hands out views of it; the caller must not use a view
after asking for the same name again. With autograd recording (the values are saved for the
backward pass), or above :data:`MAX_BYTES`, every call gets a new tensor.

:func:`cached_constant` memoises the small constant tensors the forms build from sizes alone;
they are built outside inference mode, so that the same tensor serves calls with autograd.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable

import torch

MAX_BYTES = 64 << 20
"""Largest buffer kept per name and thread."""

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device: a view of this
    thread's buffer ``name`` when no gradient is recorded, else a new tensor."""
    numel = math.prod(shape)
    if torch.is_grad_enabled() or numel * like.element_size() > MAX_BYTES:
        return like.new_empty(shape)
    # inference tensors cannot be written outside inference mode and the reverse: one pool each
    key = (name, like.dtype, like.device, torch.is_inference_mode_enabled())
    buffers = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = like.new_empty(numel)
        buffers[key] = buffer
    return buffer[:numel].view(shape)


def release_scratch() -> None:
    """Drop this thread's scratch buffers (the next calls allocate them again)."""
    _local.__dict__.pop("buffers", None)


def cached_constant(maxsize: int) -> Callable:
    """``functools.lru_cache`` for functions that build constant tensors from hashable
    arguments, building them outside inference mode (an inference tensor cannot be saved for
    a backward pass, so a mask first built under ``torch.inference_mode`` would break later
    calls with autograd)."""

    def wrap(build: Callable) -> Callable:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args):
            with torch.inference_mode(False):
                return build(*args)

        return cached

    return wrap
