"""The multi-directional form of a pLSTM grid layer (paper A.7) for the CPU: the four
orientations' gating matrices built straight into ONE summed matrix, then one contraction.

    h[n] = Σ_{n'} G[n, n'] · (q[n]·k[n']) · v[n'],   G = Σ_o G_o   (paper eq. 7, A.7)

G is indexed (target n, source n'), nodes in stored x-major order n = x·Y + y. Orientation
o = fx + 2·fy reaches only its own quadrant, so a block of G between two different columns
comes from the two orientations of one fx, and a block between a column and itself from all
four. Nothing of size B·H·N²·O is materialised and every block of G is written once:

1. Columns in closed form (paper A.4; :mod:`plstm_core.ops.grid_columns`), y in stored order:
   a path inside a column carries the product of the vertical transitions strictly between its
   ends, the same in both y directions, so fy only picks the triangle. Per column Ψ (node →
   outgoing right edge), Γ (node → node) and, for modes P / U, Μ (incoming left edge → node),
   Φ (left edge → right edge), Y×Y each, all four from one broadcast product.
2. Blocks between columns.
   Mode D (the horizontal → vertical transition is zero, so a path runs down its source
   column, turns once and runs along one row, paper 4.2): G[x,y; x',y'] =
   Ψ_{x'}[y', y] · Π_{x' < j < x} t00(j, y) · mark(x, y) (products between x' and x in either
   x direction): per target row y and source column x' a product of rank 4 (the four
   orientations), one batched [X,4]·[4,Y] product, O(N²); G stays in that product's order
   ([y, x', x, y'] in memory) and the contraction reads it through a permuted view.
   Modes P / U: columns merge pairwise along x in log depth (paper eq. 17-20 with Y×Y matrices),
   in each fx's frame (x reversed for fx = 1) with the two fy stacked along the edge axis
   (2·Y edges, Φ block diagonal), so that at every level the cross blocks Μ_Dᵀ·Ψ_Uᵀ of all
   sibling pairs (U upstream, D downstream) of both fx and both fy are ONE batched product,
   its operands' rows put in stored order beforehand; O(N2²·Y) in all.
3. Diagonal column blocks: Σ_o Γ_o, and Σ_o Direct_o on the diagonal.
4. The contraction, per image: scores q·kᵀ scaled by K^-1/2 inside the product, ⊙ G in
   place, then ·v written straight into the ``[X,Y,H,V]`` output order.

For the merges X is padded with zero-gate columns to X2 = 2^a or 3·2^a (X2 < 4/3·X + 1);
padded nodes are never reached and are cut off before the contraction.

Cost with N = X·Y, N2 = X2·Y (mode D: N2 = N), P = B·H: time O(P·(N2²·Y + N²·(K + V))) for
modes P / U, O(P·N²·(K + V)) for mode D; memory O(P·N2²) (G itself, one matrix per grid,
and the scores; both in reused buffers when no gradient is recorded, see ``workspace``).

Without autograd (float32 / float64), steps 1-3 are replaced by the C kernel of
:mod:`plstm_core.ops.grid_gating_native` (one sweep per orientation, O(P·N²), no padding),
which builds the same G without the few hundred small tensor operations of steps 1-3.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from plstm_core.ops.grid_gating_native import native_gating_available, native_summed_gating
from plstm_core.ops.grid_mix import GridMixLayout
from plstm_core.ops.grid_mix_gates import GridGates, grid_gates, write_into
from plstm_core.ops.workspace import cached_constant, scratch


def padded_columns(X: int) -> int:
    """The smallest X2 ≥ X of the form 2^a or 3·2^a."""
    if X <= 2:
        return X
    pow2 = 1 << (X - 1).bit_length()
    three = 3 << ((X + 2) // 3 - 1).bit_length()
    return min(pow2, three)


@cached_constant(maxsize=32)
def _triangles(L: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``[L,L]`` float masks: a + 1 < b, its complement, a < b; and the identity."""
    i = torch.arange(L, device=device)
    apart = (i[:, None] + 1 < i[None, :]).to(dtype)
    before = (i[:, None] < i[None, :]).to(dtype)
    return apart, 1.0 - apart, before, torch.eye(L, dtype=dtype, device=device)


def path_product_halves(t: torch.Tensor, reverse_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`path_products` as its two halves along ``reverse_dim`` (that axis dropped): the
    forward walk (a < b) and the backward one (a > b, a transposed view)."""
    L = t.shape[-1]
    apart, close, before, _ = _triangles(L, t.dtype, t.device)
    shifted = F.pad(t[..., :-1], (1, 0))  # shifted[b] = t[b − 1]
    # Π_{a+1 < r ≤ b} t[r − 1] = Π_{a < r < b} t[r] for a < b, then the lower triangle cut
    forward = torch.cumprod(torch.addcmul(close, shifted[..., None, :], apart), -1) * before
    fwd, bwd = forward.unbind(reverse_dim)
    return fwd, bwd.transpose(-1, -2)


def path_products(t: torch.Tensor, reverse_dim: int) -> torch.Tensor:
    """t ``[..., L]`` (with a size-2 axis ``reverse_dim``) → ``[..., L, L]``: entry (a, b) is
    Π_{min(a,b) < r < max(a,b)} t[r] for a < b where that axis is 0 and for a > b where it is 1
    (the walk runs backwards there), zero elsewhere. O(L²) per row of t."""
    return torch.stack(path_product_halves(t, reverse_dim), dim=reverse_dim)


class ColumnMatrices(NamedTuple):
    """Per column, rows from and columns to, ``[P,fx,fy,X,Y,Y]``: Ψ (node y' → outgoing right
    edge y), Γ (node y' → node y) and, for modes P / U, Μ (incoming left edge y' → node y) and
    Φ (left edge y' → right edge y)."""

    psi: torch.Tensor
    gamma: torch.Tensor
    mu: torch.Tensor | None
    phi: torch.Tensor | None


def column_matrices(g: GridGates, transfer: bool) -> ColumnMatrices:
    """Ψ, Γ and (``transfer``) Μ, Φ of every column from gates ``[P,fx,fy,X,Y]``.

    Each is diag(d) + a[y']·P1[y', y]·b[y] (see :mod:`plstm_core.ops.grid_columns`) with
    a ∈ (source, t01), b ∈ (t10, mark): ONE product of the [a]·P1 rows with the [b] columns
    gives all four, (source, t10) Ψ, (source, mark) Γ, (t01, t10) Φ, (t01, mark) Μ; a and b
    are views of the packed gates. O(P·X·Y²) time and memory."""
    Y = g.source.shape[-1]
    fwd, bwd = path_product_halves(g.t11, reverse_dim=2)  # P1 [P,fx,X,Y,Y] of fy = 0, 1
    a = g.packed[1:4:2] if transfer else g.packed[1:2]  # (source, t01) [A,P,fx,fy,X,Y]
    b = g.packed[0:3:2, ..., None, :]  # (t10, mark)
    left = a.new_empty((*a.shape, Y))
    write_into(left[:, :, :, 0], torch.mul, a[:, :, :, 0, ..., None], fwd)
    write_into(left[:, :, :, 1], torch.mul, a[:, :, :, 1, ..., None], bwd)
    c = left[:, None] * b
    diagonal = c.diagonal(0, -2, -1)  # P1 has none: the diagonals are d
    diagonal[0, 0].copy_(g.source)
    if not transfer:
        return ColumnMatrices(c[0, 0], c[0, 1], None, None)
    diagonal[1, 0].copy_(g.t00)
    diagonal[1, 1].copy_(g.mark)
    return ColumnMatrices(c[0, 0], c[0, 1], c[1, 1], c[1, 0])


def _cross_d_mode(g: GridGates, psi: torch.Tensor) -> torch.Tensor:
    """Mode D: G ``[P,X,Y,X,Y]`` (target, source; stored order) between different columns,
    Σ_{fx,fy} Ψ_{x'}[y', y] · Π_{x'<j<x} t00(j, y) · mark(x, y); zero blocks where x' = x.

    For every target row y and source column x' the block over (x, y') is a product of rank 4
    (the four orientations): one batched [X, 4]·[4, Y] product (the rows written in its
    operand order), returned as a permuted view: the contraction reads it in place."""
    P, _, _, X, Y = g.t00.shape
    fwd, bwd = path_product_halves(g.t00.transpose(3, 4), reverse_dim=1)  # [P,fy,Y,X',X]
    mark = g.mark.transpose(3, 4)[..., None, :]  # [P,fx,fy,Y,1,X]
    rows = mark.new_empty(P, Y, X, X, 2, 2)  # [(P,y,x'),x,(fx,fy)]
    by_fx = rows.permute(4, 0, 5, 1, 2, 3)  # [fx,P,fy,Y,X',X]
    write_into(by_fx[0], torch.mul, fwd, mark[:, 0])
    write_into(by_fx[1], torch.mul, bwd, mark[:, 1])
    cols = psi.permute(0, 5, 3, 1, 2, 4).reshape(P * Y * X, 4, Y)  # [(P,y,x'),r,y']
    if torch.is_grad_enabled():
        blocks = torch.bmm(rows.view(P * Y * X, X, 4), cols)
    else:
        blocks = scratch("gating", (P * Y * X, X, Y), rows)
        torch.bmm(rows.view(P * Y * X, X, 4), cols, out=blocks)
    return blocks.view(P, Y, X, X, Y).permute(0, 3, 1, 2, 4)


@cached_constant(maxsize=256)
def _pair_rows(
    blocks: int, w: int, Y: int, pairs: tuple[int, int, int], flipped_first: bool, device
) -> torch.Tensor:
    """Index into a block tensor ``[fx,fy,blocks,w·Y]`` (flattened) that lists, for the nb
    pairs of ``pairs`` = (first block, block step, nb), the rows of their blocks in the order
    [fx, pair, row, fy] — fx = 1 first if ``flipped_first`` — with pairs and rows in stored
    x order: reversed (x within the block too) where fx = 1."""
    first, step, nb = pairs
    fx = torch.arange(2, device=device)[:, None, None, None, None]
    if flipped_first:
        fx = 1 - fx
    pair = torch.arange(nb, device=device)[None, :, None, None, None]
    col = torch.arange(w, device=device)[None, None, :, None, None]
    y = torch.arange(Y, device=device)[None, None, None, :, None]
    fy = torch.arange(2, device=device)[None, None, None, None, :]
    block = first + step * torch.where(fx == 1, nb - 1 - pair, pair)
    row = torch.where(fx == 1, w - 1 - col, col) * Y + y
    return (((fx * 2 + fy) * blocks + block) * (w * Y) + row).reshape(-1)


def _merged_blocks(c: ColumnMatrices, G: torch.Tensor) -> None:
    """Modes P / U: the blocks of G ``[P,X2,Y,X2,Y]`` (target, source; stored order) between
    different columns, by pairwise merges along x of the column matrices (x-frame order)."""
    P, _, _, X2, Y, _ = c.psi.shape
    Q = 4 * P
    # per block of w columns (orientations and grids flattened into Q):
    # S, Μᵀ [Q,blocks,w·Y,Y] (nodes × right / left edges), T [Q,blocks,Y,Y]
    S = c.psi.reshape(Q, X2, Y, Y)
    MT = c.mu.transpose(-1, -2).reshape(Q, X2, Y, Y)
    T = c.phi.reshape(Q, X2, Y, Y)
    w = 1
    while S.shape[1] > 1:
        blocks = S.shape[1]
        if blocks == 3:  # (0 → 1), then (0,1 → 2)
            _write_cross(G, S, MT, (w, w), (0, 1), (1, 1))
            S01 = torch.cat([torch.bmm(S[:, 0], T[:, 1]), S[:, 1]], dim=1)[:, None]
            _write_cross(G, S01, MT, (2 * w, w), (0, 1), (2, 1))
            return
        nb = blocks // 2
        _write_cross(G, S, MT, (w, w), (0, 2), (1, 2))
        if blocks == 2:
            return
        S_U, S_D = S.view(Q * nb, 2, w * Y, Y).unbind(1)
        MT_U, MT_D = MT.view(Q * nb, 2, w * Y, Y).unbind(1)
        T_U, T_D = T.view(Q * nb, 2, Y, Y).unbind(1)
        S = torch.cat([torch.bmm(S_U, T_D), S_D], dim=1).view(Q, nb, 2 * w * Y, Y)
        MT = torch.cat([MT_U, torch.bmm(MT_D, T_U.transpose(1, 2))], dim=1)
        MT = MT.view(Q, nb, 2 * w * Y, Y)
        T = torch.bmm(T_U, T_D).view(Q, nb, Y, Y)
        w *= 2


def _write_cross(
    G: torch.Tensor,
    S: torch.Tensor,
    MT: torch.Tensor,
    widths: tuple[int, int],
    upstream: tuple[int, int],
    downstream: tuple[int, int],
) -> None:
    """Write G[D, U] = Μ_Dᵀ·Ψ_Uᵀ, summed over fy, for sibling pairs of both fx.

    S ``[4P,·,wu·Y,Y]`` holds the upstream blocks (``widths`` = (wu, wd) columns), MT
    ``[4P,·,wd·Y,Y]`` the downstream ones; pair i takes block ``first + i·step`` of each
    (``upstream`` / ``downstream`` = (first, step)). In the x-frame pair i spans columns
    i·(wu + wd) + [0, wu + wd): with several pairs they tile the grid, a single pair starts at
    frame column 0."""
    P, X2, Y = G.shape[0], G.shape[1], G.shape[2]
    wu, wd = widths
    width = wu + wd
    nb = X2 // width if upstream[1] == 2 else 1
    # the destinations of both fx as one strided view of G [P,X2,Y,X2,Y]: pair i of fx = 0
    # writes rows i·width + wu + [0, wd), columns i·width + [0, wu); the x-flipped pairs (in
    # stored order, starting at column `end`) rows end + i·width + [0, wd), columns after them
    rs = G.stride(1)
    end = X2 - nb * width
    base = (wu * rs, end * rs + (end + wd) * Y)
    flipped_first = base[1] < base[0]
    view = G.as_strided(
        (P, 2, nb, wd, Y, wu, Y),
        (G.stride(0), abs(base[1] - base[0]), width * (rs + Y), rs, G.stride(2), Y, 1),
        G.storage_offset() + min(base),
    )

    def pair_rows(t: torch.Tensor, w: int, first: int, step: int) -> torch.Tensor:
        index = _pair_rows(t.shape[1], w, Y, (first, step, nb), flipped_first, t.device)
        return t.reshape(P, -1, Y).index_select(1, index).view(P * 2 * nb, w * Y, 2 * Y)

    s = pair_rows(S, wu, *upstream)
    mt = pair_rows(MT, wd, *downstream)
    if nb > 1 or torch.is_grad_enabled():
        view.copy_(torch.bmm(mt, s.transpose(1, 2)).view(view.shape))
        return
    # one pair: per fx the destination is a plain [P, wd·Y, wu·Y] matrix view of G
    mt, s = mt.view(P, 2, wd * Y, 2 * Y), s.view(P, 2, wu * Y, 2 * Y)
    out = view.view(P, 2, wd * Y, wu * Y)  # nb = 1: rows (x, y) and columns (x', y') merge
    for fx in range(2):
        torch.bmm(mt[:, fx], s[:, fx].transpose(1, 2), out=out[:, fx])


def summed_gating(g: GridGates, direct: torch.Tensor, mode: str) -> torch.Tensor:
    """G ``[P,X2,Y,X2,Y]`` (target x, y, source x', y'; a strided view in mode D) of the four
    orientations summed, from gates ``[P,fx,fy,X2,Y]`` (x-frame order for modes P / U, stored
    for D) and direct ``[B,H,X,Y]`` (summed over orientations, stored order; P = B·H)."""
    P, _, _, X2, Y = g.source.shape
    c = column_matrices(g, transfer=mode != "D")
    if mode == "D":
        G = _cross_d_mode(g, c.psi)
        gamma = c.gamma.sum((1, 2))
    else:
        G = scratch("gating", (P, X2, Y, X2, Y), c.psi)
        _merged_blocks(c, G)
        gamma = c.gamma.sum(2)  # [P,fx,X2,Y,Y], x in frame order
    # G[x, y, x, y'] = Γ[x, y', y]; the diagonal blocks as [P,X2,y',y]
    diagonal_blocks = G.diagonal(0, 1, 3).permute(0, 3, 2, 1)
    if mode == "D":
        diagonal_blocks.copy_(gamma)
    else:
        write_into(diagonal_blocks, torch.add, gamma[:, 0], gamma[:, 1].flip(1))
    X = direct.shape[2]
    G.diagonal(0, 1, 3).diagonal(0, 1, 2)[:, :X].view(direct.shape).add_(direct)
    return G


def grid_mix_summed(z: torch.Tensor, layout: GridMixLayout) -> torch.Tensor:
    """Σ over the four orientations of ``plstm_2d`` from the projection z ``[B,X,Y,F]``
    (:class:`GridMixLayout`) as ONE contraction with the summed gating matrix (paper eq. 7,
    A.7 multi-directional form); returns ``[B,X,Y,H,V]`` (float32 for bf16/fp16 z).

    Time O(B·H·(N2²·Y + N²·(K + V))) (mode D: O(B·H·N²·(K + V))), memory O(B·H·N2²);
    N = X·Y, N2 = X2·Y with X2 < 4/3·X + 1 (mode D: X2 = X); see the module docstring."""
    B, X, Y, _ = z.shape
    H, K, V = layout.num_heads, layout.qk_head_dim, layout.v_head_dim
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    N = X * Y
    if native_gating_available(dtype, z.device):
        g, direct = grid_gates(z, layout, dtype, X)
        G = scratch("gating", (B * H, N, N), g.packed)
        native_summed_gating(g.packed.contiguous(), direct.reshape(B * H, X, Y).contiguous(), G)
        G = G.view(B, H, X, Y, X, Y)
    else:
        merged = layout.mode != "D"
        X2 = padded_columns(X) if merged else X
        g, direct = grid_gates(z, layout, dtype, X2, x_frames=merged)
        G = summed_gating(g, direct, layout.mode)[:, :X, :, :X].unflatten(0, (B, H))
    zc = z.to(dtype)

    def heads(start: int, width: int) -> torch.Tensor:  # [B,H,N,width]
        return zc[..., start : start + H * width].reshape(B, N, H, width).transpose(1, 2)

    q, k, v = heads(0, K), heads(layout.k_offset, K), heads(layout.v_offset, V)
    if torch.is_grad_enabled():
        weights = torch.matmul(q, k.transpose(-1, -2)).view(G.shape) * G
        h = torch.matmul(weights.reshape(B, H, N, N), v) * layout.key_scale  # [B,H,N,V]
        return h.transpose(1, 2).reshape(B, X, Y, H, V)
    # per image: the scores scaled inside the product, h written straight in [N,H,V] order
    scores = scratch("scores", (B, H, N, N), zc)
    h = zc.new_empty(B, N, H, V)
    for b in range(B):
        torch.baddbmm(
            scores[b], q[b], k[b].transpose(1, 2), beta=0, alpha=layout.key_scale, out=scores[b]
        ).view(G.shape[1:]).mul_(G[b])
        torch.bmm(scores[b], v[b], out=h[b].transpose(0, 1))
    return h.view(B, X, Y, H, V)
