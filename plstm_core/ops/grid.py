"""pLSTM on one DAG orientation of a 2D grid: recurrent, parallel and chunkwise forms.

Edge direction 0 runs (x,y)→(x+1,y), direction 1 (x,y)→(x,y+1) (DESIGN.md section 3):
    C[x,y,o] = Σ_i transition[x,y,i,o]·C_in[x,y,i] + source[x,y,o]·k⊗v      (paper eq. 5)
    h[x,y]   = q·Σ_i mark[x,y,i]·C_in[x,y,i] + direct·(q·k)·v                 (paper eq. 6)
with C_in[x,y,0] = C[x−1,y,0] and C_in[x,y,1] = C[x,y−1,1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plstm_core.ops.contraction import gated_linear_attention
from plstm_core.ops.grid_blocks import build_blocks
from plstm_core.ops.grid_columns import column_gating_matrix
from plstm_core.ops.grid_scan import scan_block_grid
from plstm_core.ops.grid_triton import plstm_2d_parallel_triton, triton_supported
from plstm_core.ops.sizes import next_pow2
from plstm_core.ops.validation import (
    check_chunk_size,
    check_method,
    check_same_device,
    check_shape,
    check_tensor,
    compute_dtype,
    output_dtype,
)

METHODS = ("parallel", "recurrent", "chunkwise")


def _check_gates(
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    lead: tuple[int, ...] | None = None,
) -> tuple[int, ...]:
    check_tensor("source", source, 5)
    lead = tuple(source.shape[:4]) if lead is None else lead
    check_shape("source", source, (*lead, 2), "[B,H,X,Y,2]")
    check_tensor("transition", transition, 6)
    check_shape("transition", transition, (*lead, 2, 2), "[B,H,X,Y,2,2]")
    check_tensor("mark", mark, 5)
    check_shape("mark", mark, (*lead, 2), "[B,H,X,Y,2]")
    check_tensor("direct", direct, 4)
    check_shape("direct", direct, lead, "[B,H,X,Y]")
    if 0 in lead:
        raise ValueError(f"B, H, X and Y must be positive, got {lead}")
    return lead


def _pad_gates(source, transition, mark, X2: int, Y2: int):
    """Flatten B,H into P and zero-pad the grid to X2×Y2. Padded nodes sit after the real
    ones in both directions, so they cannot reach a real node: zero gates are exact."""
    B, H, X, Y = source.shape[:4]
    px, py = X2 - X, Y2 - Y
    source = F.pad(source.reshape(B * H, X, Y, 2), (0, 0, 0, py, 0, px))
    transition = F.pad(transition.reshape(B * H, X, Y, 2, 2), (0, 0, 0, 0, 0, py, 0, px))
    mark = F.pad(mark.reshape(B * H, X, Y, 2), (0, 0, 0, py, 0, px))
    return source, transition, mark


def _gating(source, transition, mark, direct) -> torch.Tensor:
    """G ``[B,H,N,N]`` from gates already in the compute dtype (see grid_gating_matrix)."""
    B, H, X, Y = direct.shape
    N = X * Y
    s, t, m = _pad_gates(source, transition, mark, next_pow2(X), Y)
    G = column_gating_matrix(s, t, m)[:, :N, :N].reshape(B, H, N, N)
    return G + torch.diag_embed(direct.reshape(B, H, N))


def grid_gating_matrix(
    source: torch.Tensor, transition: torch.Tensor, mark: torch.Tensor, direct: torch.Tensor
) -> torch.Tensor:
    """The gating matrix G of paper eq. 7 for one grid orientation: G[n', n] = Σ over all
    paths n'→n of source·Π transition·mark, direct on the diagonal. Nodes in x-major order
    (n = x·Y + y); indexed (source node n', target node n). Built hierarchically (paper A.4)
    over columns resolved in closed form (see ``grid_columns``).

    Gates as in :func:`plstm_2d`; returns ``[B,H,X·Y,X·Y]`` in float32 (float64 for float64
    inputs). Cost: O(B·H·N2²·Y) time, O(B·H·N2²) memory with N2 = X2·Y, X2 the next power
    of two ≥ X.
    """
    _check_gates(source, transition, mark, direct)
    check_same_device({"source": source, "transition": transition, "mark": mark, "direct": direct})
    dtype = compute_dtype(source, transition, mark, direct)
    return _gating(*(t.to(dtype) for t in (source, transition, mark, direct)))


def _to_blocks(t: torch.Tensor, cx: int, cy: int) -> torch.Tensor:
    """``[P,X,Y,...]`` (X, Y multiples of cx, cy) → ``[P,nx,ny,cx·cy,...]``."""
    P, X, Y = t.shape[:3]
    rest = t.shape[3:]
    t = t.reshape(P, X // cx, cx, Y // cy, cy, *rest).transpose(2, 3)
    return t.reshape(P, X // cx, Y // cy, cx * cy, *rest)


def _from_blocks(t: torch.Tensor, cx: int, cy: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks`."""
    P, nx, ny = t.shape[:3]
    rest = t.shape[4:]
    t = t.reshape(P, nx, ny, cx, cy, *rest).transpose(2, 3)
    return t.reshape(P, nx * cx, ny * cy, *rest)


def _parallel(q, k, v, source, transition, mark, direct):
    """Paper eq. 7 with G from the hierarchical construction (A.4), then one contraction.
    Time O(B·H·(N2²·Y + N²·(K+V))), memory O(B·H·N2²), N2 = X2·Y."""
    B, H, X, Y, K = q.shape
    G = _gating(source, transition, mark, direct)
    h = gated_linear_attention(
        q.reshape(B, H, X * Y, K), k.reshape(B, H, X * Y, K), v.reshape(B, H, X * Y, -1), G
    )
    return h.reshape(B, H, X, Y, -1)


def _parallel_in_float32(*inputs: torch.Tensor) -> torch.Tensor:
    return _parallel(*(t.float() for t in inputs))


def _recurrent(q, k, v, source, transition, mark, direct):
    """Paper eq. 5-6 node by node, vectorised over each anti-diagonal (X+Y−1 steps).
    Time O(B·H·N·K·V), memory O(B·H·N·K·V) (cell states kept for autograd)."""
    B, H, X, Y, _ = q.shape
    V = v.shape[-1]
    P = B * H
    flat = lambda t: t.reshape(P, X, Y, *t.shape[4:])  # noqa: E731
    h = scan_block_grid(
        flat(transition),
        flat(source)[..., None, :],
        flat(mark)[..., None],
        flat(q)[..., None, :],
        flat(k)[..., None, :],
        flat(v)[..., None, :],
        side=1,
    ).reshape(B, H, X, Y, V)
    return h + direct[..., None] * (q * k).sum(-1, keepdim=True) * v


def _chunkwise(q, k, v, source, transition, mark, direct, chunk_size: int):
    """Paper A.7: blocks of c×c nodes built in parallel (A.4) with their own gating matrix,
    cell states carried across block borders by the anti-diagonal recurrence.
    Time O(B·H·N·(c²·(K+V) + c·K·V)), memory O(B·H·N·(c² + K·V/c)) — linear in N."""
    B, H, X, Y, _ = q.shape
    V = v.shape[-1]
    P = B * H
    cx, cy = min(chunk_size, next_pow2(X)), min(chunk_size, next_pow2(Y))
    X2, Y2 = -(-X // cx) * cx, -(-Y // cy) * cy
    s, t, m = _pad_gates(source, transition, mark, X2, Y2)
    blocks = build_blocks(s, t, m, cx, cy)
    n = cx * cy
    nx, ny = X2 // cx, Y2 // cy

    def node_blocks(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(P, X, Y, -1)
        return _to_blocks(F.pad(x, (0, 0, 0, Y2 - Y, 0, X2 - X)), cx, cy)

    qb, kb, vb = node_blocks(q), node_blocks(k), node_blocks(v)
    db = node_blocks(direct[..., None])[..., 0]
    G = blocks.G.reshape(P, nx, ny, n, n) + torch.diag_embed(db)
    h = gated_linear_attention(qb, kb, vb, G)
    h = h + scan_block_grid(
        blocks.T,
        blocks.S.reshape(P, nx, ny, n, -1),
        blocks.M.reshape(P, nx, ny, -1, n),
        qb,
        kb,
        vb,
        side=cy,
    )
    return _from_blocks(h, cx, cy)[:, :X, :Y].reshape(B, H, X, Y, V)


def plstm_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    *,
    method: str = "parallel",
    chunk_size: int = 16,
) -> torch.Tensor:
    """pLSTM over one DAG orientation of an X×Y grid (paper eq. 5-6, 4.3.1).

    q, k ``[B,H,X,Y,K]``, v ``[B,H,X,Y,V]``, source ``[B,H,X,Y,2]``, transition
    ``[B,H,X,Y,2,2]`` (``[..., in, out]``), mark ``[B,H,X,Y,2]``, direct ``[B,H,X,Y]``.
    Returns h ``[B,H,X,Y,V]`` in the inputs' promoted dtype (computed in float32, or float64).

    method:
      - ``"parallel"``: gating matrix in log depth (paper A.4) + one masked contraction;
        O(B·H·N2²) memory with N2 = X2·Y, X padded to the next power of two X2. On a GPU
        with Triton, grids up to 1024 padded nodes run the fused forward kernel of
        ``grid_triton`` instead (O(B·H·N·(K+V)) memory; ``PLSTM_DISABLE_TRITON=1`` turns
        it off).
      - ``"recurrent"``: anti-diagonal recurrence; O(B·H·N·K·V) memory.
      - ``"chunkwise"``: parallel inside ``chunk_size``² blocks (a power of two), recurrent
        across them (paper A.7); memory linear in N.
    """
    check_method(method, METHODS)
    check_tensor("q", q, 5)
    B, H, X, Y, K = q.shape
    check_tensor("k", k, 5)
    check_shape("k", k, (B, H, X, Y, K), "[B,H,X,Y,K]")
    check_tensor("v", v, 5)
    check_shape("v", v, (B, H, X, Y, v.shape[-1]), "[B,H,X,Y,V]")
    _check_gates(source, transition, mark, direct, lead=(B, H, X, Y))
    named = {"q": q, "k": k, "v": v, "source": source, "transition": transition, "mark": mark}
    named["direct"] = direct
    check_same_device(named)
    if method == "chunkwise":
        check_chunk_size(chunk_size)
        if chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    out_dtype = output_dtype(*named.values())
    dtype = compute_dtype(*named.values())
    if (
        method == "parallel"
        and dtype == torch.float32
        and k.dtype == q.dtype
        and triton_supported(q, v)
    ):
        return plstm_2d_parallel_triton(_parallel_in_float32, *named.values()).to(out_dtype)
    args = [t.to(dtype) for t in named.values()]
    if method == "parallel":
        h = _parallel(*args)
    elif method == "recurrent":
        h = _recurrent(*args)
    else:
        h = _chunkwise(*args, chunk_size=chunk_size)
    return h.to(out_dtype)
