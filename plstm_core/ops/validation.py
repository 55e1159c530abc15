"""Input checks shared by the pLSTM ops: every problem raises ``ValueError`` naming it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_tensor(name: str, t: object, ndim: int) -> torch.Tensor:
    """Check that ``t`` is a floating tensor with ``ndim`` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float64 or bfloat16, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int], layout: str) -> None:
    """Check ``t.shape == expected``; ``layout`` names the axes, e.g. ``"[B,H,T,K]"``."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {layout} = {tuple(expected)}, got {tuple(t.shape)}"
        )


def check_same_device(named: dict[str, torch.Tensor]) -> None:
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{n}: {t.device}" for n, t in named.items())
        raise ValueError(f"all inputs must be on one device, got {listing}")


def check_method(method: str, allowed: Sequence[str]) -> None:
    if method not in allowed:
        raise ValueError(f"method must be one of {list(allowed)}, got {method!r}")


def check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (bf16/fp16 accumulate in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def output_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype of ``h``: the promoted dtype of the inputs."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
