"""Head sizes shared by the pLSTM layers."""

from __future__ import annotations


def head_dims(dim: int, num_heads: int, qk_dim: int | None) -> tuple[int, int, int]:
    """(qk_dim, K, V) per head for a layer of width ``dim``; ``qk_dim`` defaults to ``dim``.

    Raises ValueError unless dim and qk_dim are positive multiples of num_heads.
    """
    if dim < 1 or num_heads < 1 or dim % num_heads:
        raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
    qk_dim = dim if qk_dim is None else qk_dim
    if qk_dim < 1 or qk_dim % num_heads:
        raise ValueError(
            f"qk_dim ({qk_dim}) must be a positive multiple of num_heads ({num_heads})"
        )
    return qk_dim, qk_dim // num_heads, dim // num_heads
