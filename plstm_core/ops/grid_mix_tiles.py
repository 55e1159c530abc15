"""The chunkwise form of a pLSTM grid layer (paper A.7) for the CPU: linear in the number of
tokens, the four orientations in one wavefront. (It runs on a GPU too, but there it is bound by
kernel launches and no faster than four ``plstm_2d`` chunkwise calls, so the layer does not use
it there: ``docs/benchmarks/grid_tiles_gpu_h100.md``.)

Every orientation runs in its own frame (:func:`plstm_core.ops.grid_mix_gates.frame_inputs`),
its grid cut into c×c tiles. Inside a tile the pLSTM is the parallel form (paper eq. 7 with the
tile's gating matrix, A.4, :func:`plstm_core.ops.grid_blocks.build_blocks`); across tiles the
cell states C ``[K,V]`` on the 2c boundary edges of every tile are carried by the block
recurrence (paper eq. 5-6 with the generalised Source S, Transition T and Mark M of a tile):

    h[n]  += q[n] · Σ_i M[i, n] · C_in[i]                      (readout)
    C_out[o] = Σ_i T[i, o] · C_in[i] + Σ_n S[n, o] · k[n] ⊗ v[n]

Tile (x, y) needs only tiles (x−1, y) and (x, y−1), so all tiles on one anti-diagonal of the
tile grid are one step (a strided batch of the x-major tiles), for a group of R of the
B·H·4 grid-orientations at once (on the CPU R is chosen so that a step's states fit the per-core
cache; on a GPU all of them):
the Python loop runs over (nx + ny − 1)·B·H·4/R steps of five batched matrix products (the
sources [2c·K, n]·[n, V]; per incoming side the transition [2c, c]·[c, K·V] and the readout
[n, c·K]·[c·K, V]).

Cost per grid and orientation with N nodes, c×c tiles and n = c² nodes per tile:
time O(N·(n·(K+V) + (4c + 4)·K·V)) — the intra-tile contraction plus, per node, 2c·K·V for the
readout, 2c·K·V for the sources and 4·K·V for the transitions; memory O(N·(n + K·V/c)) (the
tiles' gating matrices, O(N·n), and the boundary states, kept for autograd; without autograd
only two diagonals of states are alive, in two reused buffers). Linear in N for a fixed c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plstm_core.ops.grid_blocks import build_blocks
from plstm_core.ops.grid_mix import GridMixLayout
from plstm_core.ops.grid_mix_gates import frame_inputs, from_frames
from plstm_core.ops.sizes import next_pow2
from plstm_core.ops.workspace import scratch

TILE = 4
"""Tile side c on the CPU: the readout and the sources cost 2c·K·V per node, the boundary
states 2·K·V/c of memory traffic per node; 4 was the fastest of 2, 4, 8 at K = V = 64 and
48² tokens (``docs/benchmarks/vision_cpu.md``)."""
STEP_BYTES = 2 << 20
"""Boundary states of one wavefront step kept near the per-core cache size (2 MiB here): with
more grids per step the products stream the states from memory several times."""


def _diagonals(nx: int, ny: int) -> list[tuple[int, slice]]:
    """Per anti-diagonal of an nx×ny tile grid: its first tile's x and the slice of its tiles in
    x-major order (tile (x, d − x) sits at x·(ny − 1) + d, a fixed stride along a diagonal)."""
    out = []
    for d in range(nx + ny - 1):
        lo, hi = max(0, d - ny + 1), min(d, nx - 1)
        first = lo * ny + d - lo
        out.append((lo, slice(first, first + (hi - lo) * (ny - 1) + 1, max(ny - 1, 1))))
    return out


def _to_tiles(t: torch.Tensor, cx: int, cy: int) -> torch.Tensor:
    """``[P,X,Y,C]`` (X, Y multiples of cx, cy) → ``[P,nx·ny,cx·cy,C]`` (tiles x-major, nodes
    x-major inside a tile)."""
    P, X, Y, C = t.shape
    t = t.reshape(P, X // cx, cx, Y // cy, cy, C).transpose(2, 3)
    return t.reshape(P, (X // cx) * (Y // cy), cx * cy, C)


def _from_tiles(t: torch.Tensor, nx: int, cx: int, cy: int) -> torch.Tensor:
    """Inverse of :func:`_to_tiles`."""
    P, tiles, _, C = t.shape
    t = t.reshape(P, nx, tiles // nx, cx, cy, C).transpose(2, 3)
    return t.reshape(P, nx * cx, (tiles // nx) * cy, C)


def _wavefront(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    S: torch.Tensor,
    T: torch.Tensor,
    M: torch.Tensor,
    h: torch.Tensor,
    side: int,
) -> None:
    """Add to h the contribution of everything outside each tile, for R grids of nx×ny tiles
    (x-major): q, k ``[R,nx,ny,n,K]``, v, h ``[R,nx,ny,n,V]``, S ``[R,nx,ny,n,E]`` (node →
    outgoing edge), T ``[R,nx,ny,E,E]`` (incoming → outgoing), M ``[R,nx,ny,E,n]`` (incoming
    edge → node); edges ordered [side (``side`` of them: to the right / from the left), end
    (bottom / top)]. One step per anti-diagonal of tiles; inside a step the tiles of all R
    grids form one batch, tile-major (row i·R + r), so a neighbour is a fixed row offset away."""
    R, nx, ny, _, K = q.shape
    V, E = v.shape[-1], T.shape[-1]

    def diagonal(t: torch.Tensor, tiles: slice) -> torch.Tensor:  # → [L·R, ...]
        part = t.flatten(1, 2)[:, tiles]
        return part.transpose(0, 1).reshape(-1, *part.shape[2:])

    # without autograd the states of two diagonals live in two reused buffers: fresh pages for
    # every diagonal would cost more than the products (page faults)
    rows = R * min(nx, ny)
    buffers = None if torch.is_grad_enabled() else scratch("tile states", (2, rows, E * K, V), q)
    prev_lo, state = 0, None  # outgoing states of the previous diagonal [L·R,E,K·V]
    for step, (lo, tiles) in enumerate(_diagonals(nx, ny)):
        qd, kd, vd, Sd, Td, Md = (diagonal(t, tiles) for t in (q, k, v, S, T, M))
        # Σ_n S[n, o] · k[n] ⊗ v[n] as [(o, k), n] · [n, V]
        weighted = Sd.transpose(1, 2).unsqueeze(2) * kd.transpose(1, 2).unsqueeze(1)
        target = None if buffers is None else buffers[step % 2, : vd.shape[0]]
        out = torch.bmm(weighted.flatten(1, 2), vd, out=target).view(-1, E, K * V)
        if state is not None:
            hd = torch.zeros_like(vd)
            offset = lo - prev_lo  # 0 or 1
            # tile i reads its left edges from tile i + offset − 1 of the previous diagonal
            # (that tile's right edges) and its top edges from tile i + offset (bottom edges)
            for edges, first, source in (
                (slice(None, side), max(0, 1 - offset), max(0, offset - 1)),
                (slice(side, None), 0, offset),
            ):
                count = min(out.shape[0] // R - first, state.shape[0] // R - source)
                if count <= 0:
                    continue
                here = slice(first * R, (first + count) * R)
                c_in = state[source * R : (source + count) * R, edges]  # [count·R,e,K·V]
                out[here].baddbmm_(Td[here, edges].transpose(1, 2), c_in)
                # readout q · Σ_i M[i, n] C_i as [n, (i, k)] · [(i, k), V]
                marked = Md[here, edges].transpose(1, 2).unsqueeze(-1) * qd[here].unsqueeze(2)
                hd[here].baddbmm_(marked.flatten(2), c_in.reshape(count * R, -1, V))
            h.flatten(1, 2)[:, tiles] += hd.view(-1, R, *hd.shape[1:]).transpose(0, 1)
        prev_lo, state = lo, out


def _grids_per_step(grids: int, longest: int, state_bytes: int, device: torch.device) -> int:
    """How many grids share a wavefront step: on the CPU as many as keep one diagonal's boundary
    states within STEP_BYTES (so they stay in the cache across the step's products), in equal
    groups; on a GPU all (one step's launches serve every grid)."""
    if device.type != "cpu":
        return grids
    fit = max(1, STEP_BYTES // max(1, longest * state_bytes))
    groups = -(-grids // min(fit, grids))
    return -(-grids // groups)


def grid_mix_tiles(z: torch.Tensor, layout: GridMixLayout, tile: int = TILE) -> torch.Tensor:
    """Σ over the four orientations of ``plstm_2d`` from the projection z ``[B,X,Y,F]``
    (:class:`GridMixLayout`) in the chunkwise form with tile×tile tiles (a power of two; paper
    A.7); returns ``[B,X,Y,H,V]`` (float32 for bf16/fp16 z).

    Time O(B·H·X·Y·(c²·(K+V) + (4c+4)·K·V)), memory O(B·H·X·Y·(c² + K·V/c)) with c = tile:
    linear in the number of tokens (see the module docstring)."""
    B, X, Y, _ = z.shape
    K = layout.qk_head_dim
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    inputs = frame_inputs(z, layout, dtype)
    cx, cy = min(tile, next_pow2(X)), min(tile, next_pow2(Y))
    X2, Y2 = -(-X // cx) * cx, -(-Y // cy) * cy
    nx, ny = X2 // cx, Y2 // cy
    pad = (0, 0, 0, Y2 - Y, 0, X2 - X)
    qkv, gates = F.pad(inputs.qkv, pad), F.pad(inputs.gates, pad)  # zero gates: never reached
    source, mark, direct = gates[..., 0], gates[..., 1], gates[..., 2]
    transition = gates[..., 3:].unflatten(-1, (2, 2))
    blocks = build_blocks(
        source[..., None].expand(-1, -1, -1, 2),
        transition,
        mark[..., None].expand(-1, -1, -1, 2),
        cx,
        cy,
    )
    n, OP, E = cx * cy, qkv.shape[0], blocks.T.shape[-1]

    def tiled(t: torch.Tensor, *shape: int) -> torch.Tensor:  # → [OP,nx,ny,...]
        return t.reshape(OP, nx, ny, *shape)

    qkv_t = tiled(_to_tiles(qkv, cx, cy), n, qkv.shape[-1])
    q, k, v = qkv_t[..., :K], qkv_t[..., K : 2 * K], qkv_t[..., 2 * K :]
    G = tiled(blocks.G, n, n).transpose(-1, -2)
    G = G + torch.diag_embed(tiled(_to_tiles(direct[..., None], cx, cy), n))
    h = torch.matmul(torch.matmul(q, k.transpose(-1, -2)) * G, v)
    S, T, M = tiled(blocks.S, n, E), tiled(blocks.T, E, E), tiled(blocks.M, E, n)
    R = _grids_per_step(OP, min(nx, ny), E * K * v.shape[-1] * qkv.element_size(), z.device)
    for r in range(0, OP, R):
        part = slice(r, r + R)
        _wavefront(q[part], k[part], v[part], S[part], T[part], M[part], h[part], cy)
    h = _from_tiles(h.flatten(1, 2), nx, cx, cy)[:, :X, :Y]
    return from_frames(h, B, X, Y)
