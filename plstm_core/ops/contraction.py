"""The masked linear-attention contraction shared by every parallel pLSTM path (paper eq. 7)."""

from __future__ import annotations

import torch


def gated_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gating: torch.Tensor
) -> torch.Tensor:
    """h[n] = Σ_{n'} gating[n', n] · (q[n]·k[n']) · v[n']  (paper eq. 7 with G precomputed).

    q, k ``[..., N, K]``, v ``[..., N, V]``, gating ``[..., N, N]`` indexed (source n', target n),
    with the direct term on its diagonal. Returns ``[..., N, V]``.
    Cost: O(N²·(K+V)) time, O(N²) memory per leading index — the same as attention.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * gating.transpose(-1, -2)
    return torch.matmul(scores, v)
