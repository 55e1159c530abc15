"""Gating matrix of a 2D grid as a 1D pLSTM over columns with Y×Y matrix gates (paper A.2-A.4).

A column x (the nodes (x, 0..Y−1)) is resolved in closed form: inside it, signals can only
travel along direction 1 (y → y+1), so every path between two of its nodes is a product of
direction-1 transitions, P1[y', y] = Π_{r=y'+1}^{y−1} transition[x,r,1,1], computed for all
pairs with one cumulative product. Seen from outside, a column is a super-node with Y incoming
and Y outgoing direction-0 edges, and four Y×Y matrices (rows: from, columns: to):

- Ψ source:     node y' → outgoing edge y   = δ·source₀ + [y'<y]·source₁[y']·P1·T₁₀[y]
- Φ transition: incoming y' → outgoing y    = δ·T₀₀     + [y'<y]·T₀₁[y']·P1·T₁₀[y]
- Μ mark:       incoming y' → node y        = δ·mark₀   + [y'<y]·T₀₁[y']·P1·mark₁[y]
- Γ gating:     node y' → node y            =             [y'<y]·source₁[y']·P1·mark₁[y]

(T_io = transition[..., i, o]). Columns then merge pairwise along x exactly like paper eq.
17-20 with matrices in place of scalars: S = [S_A·T_B; S_B], T = T_A·T_B, M = [M_A, T_A·M_B],
G = [[G_A, S_A·M_B], [0, G_B]] — log2(X) merges of a few batched matmuls each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inclusive_cumprod(w: torch.Tensor) -> torch.Tensor:
    """Inclusive product scan along the last axis in ⌈log2 n⌉ steps (Hillis–Steele).

    Unlike ``torch.cumprod``, whose backward inspects the data for zeros on the host, this
    never synchronises, so it can be captured in a CUDA graph; zeros are handled exactly.
    """
    shift = 1
    while shift < w.shape[-1]:
        w = w * F.pad(w[..., :-shift], (shift, 0), value=1.0)
        shift *= 2
    return w


def column_gates(
    source: torch.Tensor, transition: torch.Tensor, mark: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ψ, Φ, Μ, Γ ``[P,X,Y,Y]`` of every column from source ``[P,X,Y,2]``, transition
    ``[P,X,Y,2,2]``, mark ``[P,X,Y,2]``. Cost O(P·X·Y²) time and memory."""
    Y = source.shape[2]
    t11 = transition[..., 1, 1]
    row = torch.arange(Y, device=source.device)
    below = row[:, None] < row[None, :]  # [y', y]: y' strictly before y
    # C[y', r] = Π_{y' < r'' ≤ r} t11[r''];  P1[y', y] = C[y', y−1]
    walk = torch.where(below, t11[..., None, :], torch.ones_like(t11)[..., None, :])
    C = inclusive_cumprod(walk)
    P1 = F.pad(C[..., :-1], (1, 0), value=1.0) * below

    def vertical(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        return start[..., :, None] * P1 * end[..., None, :]

    diag = torch.diag_embed
    t01, t10 = transition[..., 0, 1], transition[..., 1, 0]
    psi = diag(source[..., 0]) + vertical(source[..., 1], t10)
    phi = diag(transition[..., 0, 0]) + vertical(t01, t10)
    mu = diag(mark[..., 0]) + vertical(t01, mark[..., 1])
    gamma = vertical(source[..., 1], mark[..., 1])
    return psi, phi, mu, gamma


def column_gating_matrix(
    source: torch.Tensor, transition: torch.Tensor, mark: torch.Tensor
) -> torch.Tensor:
    """G ``[P,X·Y,X·Y]`` (source node, target node; x-major; zero diagonal) of a grid whose
    X is a power of two, from gates shaped as in :func:`column_gates`.

    Cost: O(P·X·Y²) for the columns, then log2(X) merges; the last one dominates with
    O(P·N²·Y) time and O(P·N²) memory (N = X·Y).
    """
    P, _, Y = source.shape[:3]
    S, T, M, G = column_gates(source, transition, mark)
    width = 1
    while S.shape[1] > 1:
        nb = S.shape[1] // 2
        S_A, S_B = S.reshape(P, nb, 2, width * Y, Y).unbind(2)
        T_A, T_B = T.reshape(P, nb, 2, Y, Y).unbind(2)
        M_A, M_B = M.reshape(P, nb, 2, Y, width * Y).unbind(2)
        G_A, G_B = G.reshape(P, nb, 2, width * Y, width * Y).unbind(2)
        G = torch.cat([torch.cat([G_A, S_A @ M_B], dim=-1), F.pad(G_B, (width * Y, 0))], dim=-2)
        if nb > 1:
            S = torch.cat([S_A @ T_B, S_B], dim=-2)
            M = torch.cat([M_A, T_A @ M_B], dim=-1)
            T = T_A @ T_B
        else:
            S = S[:, :1]
        width *= 2
    return G[:, 0]
