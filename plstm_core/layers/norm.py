"""Multi-head RMSNorm: each head's value vector is normalised on its own (paper B.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadRMSNorm(nn.Module):
    """RMS-normalise every head's V vector separately, then scale by a per-channel weight.

    ``y[..., h, :] = x[..., h, :] / sqrt(mean(x[..., h, :]²) + eps) · weight[h, :]``.
    Input ``[..., H, V]`` → output ``[..., H, V]`` in the input dtype (``F.rms_norm``: bf16/fp16
    inputs are reduced in float32). The weight ``[H, V]`` starts at one. Cost O(numel) time and
    memory.
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(
                f"num_heads and head_dim must be positive, got {num_heads} and {head_dim}"
            )
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or tuple(x.shape[-2:]) != (self.num_heads, self.head_dim):
            raise ValueError(
                f"x must have shape [..., H, V] = [..., {self.num_heads}, {self.head_dim}], "
                f"got {tuple(x.shape)}"
            )
        y = F.rms_norm(x, (self.head_dim,), None, self.eps)
        return y * self.weight.to(y.dtype)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, eps={self.eps}"
