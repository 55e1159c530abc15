"""Hierarchical Source / Transition / Mark / Gating construction on a 2D grid (paper A.2, A.4).

A *block* is a bx×by rectangle of nodes seen from outside as one super-node. Its boundary
edges are ordered ``[side edges indexed by y (by), end edges indexed by x (bx)]``:
incoming ``[left (direction 0, from x−1), top (direction 1, from y−1)]`` and outgoing
``[right (direction 0), bottom (direction 1)]``. A block carries, with P = B·H flattened:

- ``S [P,nx,ny,bx,by,Eo]``  generalised source: node → outgoing boundary edge (eq. 11/14)
- ``T [P,nx,ny,Ei,Eo]``     generalised transition: incoming → outgoing boundary edge (eq. 12/15)
- ``M [P,nx,ny,Ei,bx,by]``  generalised mark: incoming boundary edge → node (eq. 13/16)
- ``G [P,nx,ny,bx,by,bx,by]`` gating between two nodes inside the block (source, target), eq. 7

A 1×1 block is a single node: S = source, T = transition, M = mark, G = 0 (the direct term is
added by the callers). Two neighbouring blocks merge into one (along x or along y) with a few
einsums, concatenations and zero paddings; alternating the axes, log2(bx) + log2(by) merges
build any power-of-two block. Merging is exact: it sums over every path through the pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GridBlocks:
    """The generalised S / T / M / G of a grid of equal blocks (shapes in the module docstring)."""

    S: torch.Tensor
    T: torch.Tensor
    M: torch.Tensor
    G: torch.Tensor
    bx: int
    by: int


def leaf_blocks(source: torch.Tensor, transition: torch.Tensor, mark: torch.Tensor) -> GridBlocks:
    """1×1 blocks from per-node gates: source ``[P,X,Y,2]``, transition ``[P,X,Y,2,2]``,
    mark ``[P,X,Y,2]``."""
    P, X, Y, _ = source.shape
    return GridBlocks(
        S=source[:, :, :, None, None, :],
        T=transition,
        M=mark[:, :, :, :, None, None],
        G=source.new_zeros(P, X, Y, 1, 1, 1, 1),
        bx=1,
        by=1,
    )


def _pair(t: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the block axis ``axis`` (1 = nx, 2 = ny) into even (A) and odd (B) neighbours."""
    shape = list(t.shape)
    shape[axis : axis + 1] = [shape[axis] // 2, 2]
    t = t.reshape(shape)
    return t.select(axis + 1, 0), t.select(axis + 1, 1)


def merge_x(blocks: GridBlocks) -> GridBlocks:
    """Merge blocks 2i and 2i+1 along x: bx×by → 2bx×by.

    Internal edges: A's right side feeds B's left side. Cost per merged pair:
    O(bx·by·by·(bx+by)) for S, O((bx+by)²·by) for T and M, O((bx·by)²·by) for G.
    """
    a, b, bx, by = blocks.by, blocks.bx, blocks.bx, blocks.by
    S_A, S_B = _pair(blocks.S, 1)
    T_A, T_B = _pair(blocks.T, 1)
    M_A, M_B = _pair(blocks.M, 1)
    G_A, G_B = _pair(blocks.G, 1)
    S_A_right = S_A[..., :a]
    M_B_left = M_B[..., :a, :, :]

    cross = torch.einsum("...xyi,...iuw->...xyuw", S_A_right, M_B_left)
    G = torch.cat(
        [torch.cat([G_A, cross], dim=-2), torch.cat([torch.zeros_like(G_B), G_B], dim=-2)],
        dim=-4,
    )
    T_B_left, T_B_top = T_B[..., :a, :], T_B[..., a:, :]
    through = torch.einsum("...xyi,...io->...xyo", S_A_right, T_B_left)
    zeros_b = S_B.new_zeros(*S_B.shape[:-1], b)
    S = torch.cat(
        [
            torch.cat([through[..., :a], S_A[..., a:], through[..., a:]], dim=-1),
            torch.cat([S_B[..., :a], zeros_b, S_B[..., a:]], dim=-1),
        ],
        dim=-3,
    )

    T_A_right = T_A[..., :, :a]
    TT = T_A_right @ T_B_left
    rows_A = torch.cat([TT[..., :a], T_A[..., a:], TT[..., a:]], dim=-1)
    rows_B = torch.cat(
        [T_B_top[..., :a], T_B_top.new_zeros(*T_B_top.shape[:-1], b), T_B_top[..., a:]], dim=-1
    )
    T = torch.cat([rows_A, rows_B], dim=-2)

    M_B_through = torch.einsum("...ei,...ixy->...exy", T_A_right, M_B_left)
    M = torch.cat(
        [
            torch.cat([M_A, M_A.new_zeros(*M_A.shape[:-3], b, bx, by)], dim=-3),
            torch.cat([M_B_through, M_B[..., a:, :, :]], dim=-3),
        ],
        dim=-2,
    )
    return GridBlocks(S, T, M, G, 2 * bx, by)


def merge_y(blocks: GridBlocks) -> GridBlocks:
    """Merge blocks 2j and 2j+1 along y: bx×by → bx×2by (see :func:`merge_x`).

    Internal edges: A's bottom side feeds B's top side. New incoming edges are ordered
    [left_A, left_B, top_A], outgoing [right_A, right_B, bottom_B].
    """
    a, bx, by = blocks.by, blocks.bx, blocks.by
    S_A, S_B = _pair(blocks.S, 2)
    T_A, T_B = _pair(blocks.T, 2)
    M_A, M_B = _pair(blocks.M, 2)
    G_A, G_B = _pair(blocks.G, 2)
    S_A_bottom = S_A[..., a:]
    M_B_top = M_B[..., a:, :, :]

    cross = torch.einsum("...xyi,...iuw->...xyuw", S_A_bottom, M_B_top)
    G = torch.cat(
        [torch.cat([G_A, cross], dim=-1), torch.cat([torch.zeros_like(G_B), G_B], dim=-1)],
        dim=-3,
    )
    T_B_top = T_B[..., a:, :]
    through = torch.einsum("...xyi,...io->...xyo", S_A_bottom, T_B_top)
    S = torch.cat(
        [
            torch.cat([S_A[..., :a], through], dim=-1),
            torch.cat([S_B.new_zeros(*S_B.shape[:-1], a), S_B], dim=-1),
        ],
        dim=-2,
    )

    T_A_bottom = T_A[..., :, a:]
    rows_A = torch.cat([T_A[..., :a], T_A_bottom @ T_B_top], dim=-1)
    rows_B = torch.cat([T_B.new_zeros(*T_B.shape[:-2], a, a), T_B[..., :a, :]], dim=-1)
    T = torch.cat([rows_A[..., :a, :], rows_B, rows_A[..., a:, :]], dim=-2)

    M_B_through = torch.einsum("...ei,...ixy->...exy", T_A_bottom, M_B_top)
    R_A = torch.cat([M_A, M_B_through], dim=-1)
    R_B = torch.cat([M_B.new_zeros(*M_B.shape[:-3], a, bx, by), M_B[..., :a, :, :]], dim=-1)
    M = torch.cat([R_A[..., :a, :, :], R_B, R_A[..., a:, :, :]], dim=-3)
    return GridBlocks(S, T, M, G, bx, 2 * by)


def build_blocks(
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    bx: int,
    by: int,
) -> GridBlocks:
    """Blocks of bx×by nodes (powers of two dividing X and Y) from per-node gates
    (shapes as in :func:`leaf_blocks`), merging along x and y alternately so that blocks stay
    near-square (fewest boundary edges).

    Cost: O(log bx + log by) merges; total time O(N·(bx·by)·max(bx,by)) and memory
    O(N·bx·by) per P, dominated by the last merge's gating matrix.
    """
    blocks = leaf_blocks(source, transition, mark)
    while blocks.bx < bx or blocks.by < by:
        if blocks.bx < bx and (blocks.bx <= blocks.by or blocks.by >= by):
            blocks = merge_x(blocks)
        else:
            blocks = merge_y(blocks)
    return blocks
