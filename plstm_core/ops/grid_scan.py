"""Recurrence over a grid of blocks along anti-diagonals (paper eq. 5-6 at block level, A.7).

Block (x, y) depends only on blocks (x−1, y) and (x, y−1), so all blocks on one anti-diagonal
x + y = d are computed together: the only Python loop runs over the nx + ny − 1 diagonals.
With 1×1 blocks this is the recurrent form of ``plstm_2d``; with c×c blocks it is the
inter-chunk part of the chunkwise form.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _diagonals(nx: int, ny: int, device: torch.device) -> list[tuple[int, int, torch.Tensor]]:
    """(first x, last x, flat block indices x·ny + y) of every anti-diagonal."""
    out = []
    for d in range(nx + ny - 1):
        lo, hi = max(0, d - ny + 1), min(d, nx - 1)
        xs = torch.arange(lo, hi + 1, device=device)
        out.append((lo, hi, xs * ny + (d - xs)))
    return out


def _diagonal_step(T, S, M, q, k, v, c_in):
    """One anti-diagonal: readout of the incoming border states and the outgoing ones."""
    h = torch.einsum("plnk,plin,plikv->plnv", q, M, c_in)
    c_out = torch.einsum("plio,plikv->plokv", T, c_in) + torch.einsum(
        "plno,plnk,plnv->plokv", S, k, v
    )
    return h, c_out


def scan_block_grid(
    T: torch.Tensor,
    S: torch.Tensor,
    M: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    side: int,
) -> torch.Tensor:
    """Carry cell states across block borders and read them out at every node.

    Boundary edges are ordered [side (``side`` = by edges), end (bx edges)] as in
    ``grid_blocks``; with
    n nodes per block and P = B·H:
    T ``[P,nx,ny,Ei,Eo]``, S ``[P,nx,ny,n,Eo]``, M ``[P,nx,ny,Ei,n]``, q, k ``[P,nx,ny,n,K]``,
    v ``[P,nx,ny,n,V]`` with Ei = Eo = a + b. Returns ``[P,nx,ny,n,V]``: for every node,
    q · Σ_i M[i, node] · C_in[i], the contribution of everything outside its block.

    Cost: nx+ny−1 sequential steps; O(P·nblocks·(Ei·Eo + n·Eo)·K·V) time and
    O(P·nblocks·Ei·K·V) memory (the border states, kept for autograd). For blocks of more
    than one node each step's intermediates (n·Ei·K per block, larger than the states) are
    recomputed in the backward pass instead of kept.
    """
    P, nx, ny, Ei, Eo = T.shape
    n, K, V = q.shape[-2], q.shape[-1], v.shape[-1]
    recompute = n > 1 and torch.is_grad_enabled()
    flat = lambda t: t.reshape(P, nx * ny, *t.shape[3:])  # noqa: E731
    T, S, M, q, k, v = map(flat, (T, S, M, q, k, v))
    outputs, order = [], []
    prev_out, prev_lo = None, 0
    for lo, hi, idx in _diagonals(nx, ny, T.device):
        length = hi - lo + 1
        if prev_out is None:
            c_in = T.new_zeros(P, length, Ei, K, V)
        else:
            zero = prev_out.new_zeros(P, 1, Eo, K, V)
            padded = torch.cat([zero, prev_out, zero], dim=1)
            left = padded[:, lo - prev_lo : lo - prev_lo + length, :side]
            top = padded[:, lo - prev_lo + 1 : lo - prev_lo + 1 + length, side:]
            c_in = torch.cat([left, top], dim=2)
        args = (T[:, idx], S[:, idx], M[:, idx], q[:, idx], k[:, idx], v[:, idx], c_in)
        if recompute:
            h_d, prev_out = checkpoint(_diagonal_step, *args, use_reentrant=False)
        else:
            h_d, prev_out = _diagonal_step(*args)
        outputs.append(h_d)
        order.append(idx)
        prev_lo = lo
    h = torch.cat(outputs, dim=1)
    inverse = torch.empty(nx * ny, dtype=torch.long, device=T.device)
    inverse[torch.cat(order)] = torch.arange(nx * ny, device=T.device)
    return h[:, inverse].reshape(P, nx, ny, n, V)
