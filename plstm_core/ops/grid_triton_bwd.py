"""Fused Triton backward of the parallel 2D op: dq, dk, dv and every gate gradient from dh.

Forward (paper eq. 7 with the column form of A.4, see ``grid_columns`` and ``grid_triton``):
h_n = Σ_{n'} G[n', n]·(q_n·k_{n'})·v_{n'}, where for a source n' the row of G over the targets of
column x is G_x = W_x·Μ_x + δ_{x(n')=x}·(Γ_x + diag D_x), and W (the signal of n' arriving on
the incoming direction-0 edges of column x) advances W_{x+1} = W_x·Φ_x + δ_{x(n')=x}·Ψ_x.

Backward, with A[n', n] = G[n', n]·(q_n·k_{n'}) and E[n', n] = dh_n·v_{n'}:

- dv_{n'} = Σ_n A[n', n]·dh_n,  dk_{n'} = Σ_n G⊙E[n', n]·q_n,  dq_n = Σ_{n'} G⊙E[n', n]·k_{n'}
- dG = E ⊙ (q·k)  (the adjoint of eq. 7's gating matrix)
- the column recursion run backwards with the adjoint U_{x+1} = ∂L/∂W_{x+1} of the walk:
  dΜ_x = Σ W_xᵀ·dG_x,  dΦ_x = Σ W_xᵀ·U_{x+1},  dΓ_x = dG_x (own column),  dΨ_x = U_{x+1} (own
  column),  U_x = dG_x·Μ_xᵀ + U_{x+1}·Φ_xᵀ
- then Ψ, Φ, Μ, Γ back to source, transition, mark, direct through the closed form of
  ``grid_columns``; the direction-1 path products P1[y', y] = Π_{y'<r<y} t11[r] give
  dt11[r] = Σ_{y'} P1[y', r]·(dP1·P1ᵀ)[y', r] (no division, exact at zero gates).

One program takes one grid (b, h) and a block of SB source nodes, like the forward. It first
walks the columns forwards and writes W_x of its sources to a float32 scratch buffer, then walks
them backwards from X−1, holding U in registers. dk and dv of its own sources accumulate in
registers; dq and the gate gradients are atomic adds (float32) across source blocks.

Cost, with YB = max(16, next_pow2(Y)) and N_pad = X·YB (≤ 1024):
time O(B·H·N_pad²·(3K + 2V + 12·YB)) FLOPs (the forward: K + V + 4·YB) in
at most 2·X sequential column steps per program;
memory: the W scratch of 4·B·H·N_pad² bytes (launched in chunks of (b, h) grids to stay under
``SCRATCH_BYTES``), float32 gradient buffers O(B·H·X·Y·(K + V)), no N×N tensor otherwise.
"""

from __future__ import annotations

import torch

from plstm_core.ops.sizes import next_pow2

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the PyTorch backward serves every call
    triton = None

SMALL_GRID_NODES = 256
# (source nodes per program, warps): SB sources hold k, v, dk, dv in registers next to W and U
LAUNCH_SMALL = (32, 4)
LAUNCH_LARGE = (64, 4)
SCRATCH_BYTES = 1 << 30  # cap of the W scratch per launch; larger batches run in chunks


if triton is not None:

    @triton.jit
    def _times(a, b):
        return a * b

    @triton.jit
    def _column_gates(s_ptr, t_ptr, m_ptr, d_ptr, node, yy, col_ok):
        """One column's gate values [YB] and the path products P1 [YB, YB] (as the forward)."""
        s0 = tl.load(s_ptr + node * 2, mask=col_ok, other=0.0).to(tl.float32)
        s1 = tl.load(s_ptr + node * 2 + 1, mask=col_ok, other=0.0).to(tl.float32)
        t00 = tl.load(t_ptr + node * 4, mask=col_ok, other=0.0).to(tl.float32)
        t01 = tl.load(t_ptr + node * 4 + 1, mask=col_ok, other=0.0).to(tl.float32)
        t10 = tl.load(t_ptr + node * 4 + 2, mask=col_ok, other=0.0).to(tl.float32)
        t11_prev = tl.load(t_ptr + node * 4 - 1, mask=col_ok & (yy >= 1), other=1.0).to(tl.float32)
        m0 = tl.load(m_ptr + node * 2, mask=col_ok, other=0.0).to(tl.float32)
        m1 = tl.load(m_ptr + node * 2 + 1, mask=col_ok, other=0.0).to(tl.float32)
        d = tl.load(d_ptr + node, mask=col_ok, other=0.0).to(tl.float32)
        below = yy[:, None] < yy[None, :]
        walk = tl.where(yy[None, :] - 1 > yy[:, None], t11_prev[None, :], 1.0)
        P1 = tl.where(below, tl.associative_scan(walk, 1, _times), 0.0)
        return s0, s1, t00, t01, t10, m0, m1, d, P1

    @triton.jit
    def _grid_parallel_bwd(
        q_ptr,
        k_ptr,
        v_ptr,
        s_ptr,
        t_ptr,
        m_ptr,
        d_ptr,
        dh_ptr,
        dq_ptr,
        dk_ptr,
        dv_ptr,
        ds_ptr,
        dt_ptr,
        dm_ptr,
        dd_ptr,
        w_ptr,
        X,
        Y,
        K,
        V,
        YB: tl.constexpr,
        KB: tl.constexpr,
        VB: tl.constexpr,
        SB: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        p = tl.program_id(0)
        block = tl.program_id(1)
        rows = block * SB + tl.arange(0, SB)  # this program's sources r = x'·YB + y'
        row_x = rows // YB
        row_y = rows % YB
        src_ok = (row_x < X) & (row_y < Y)
        src = (p * X + row_x) * Y + row_y
        yy = tl.arange(0, YB)
        kk = tl.arange(0, KB)
        vv = tl.arange(0, VB)
        eye = yy[:, None] == yy[None, :]
        below = yy[:, None] < yy[None, :]
        col_ok = yy < Y
        k_mask = src_ok[:, None] & (kk[None, :] < K)
        v_mask = src_ok[:, None] & (vv[None, :] < V)
        k_b = tl.load(k_ptr + src[:, None] * K + kk[None, :], mask=k_mask, other=0.0).to(tl.float32)
        v_b = tl.load(v_ptr + src[:, None] * V + vv[None, :], mask=v_mask, other=0.0).to(tl.float32)
        x0 = (block * SB) // YB
        nblocks = tl.num_programs(1)
        w_base = w_ptr + ((p * nblocks + block) * X) * (SB * YB)
        w_offs = tl.arange(0, SB)[:, None] * YB + yy[None, :]

        # forward walk: W_x of this block's sources, kept in the scratch buffer
        w = tl.zeros([SB, YB], dtype=tl.float32)
        for x in range(x0, X):
            tl.store(w_base + x * (SB * YB) + w_offs, w)
            node = (p * X + x) * Y + yy
            s0, s1, t00, t01, t10, m0, m1, d, P1 = _column_gates(
                s_ptr, t_ptr, m_ptr, d_ptr, node, yy, col_ok
            )
            psi = tl.where(eye, s0[None, :], 0.0) + s1[:, None] * P1 * t10[None, :]
            phi = tl.where(eye, t00[None, :], 0.0) + t01[:, None] * P1 * t10[None, :]
            place = (rows[:, None] == x * YB + yy[None, :]).to(tl.float32)
            w = tl.dot(w, phi, input_precision=PRECISION)
            w += tl.dot(place, psi, input_precision=PRECISION)
        tl.debug_barrier()  # the scratch is read back by other threads of this program

        # backward walk with U = ∂L/∂W_{x+1}
        u = tl.zeros([SB, YB], dtype=tl.float32)
        dk_b = tl.zeros([SB, KB], dtype=tl.float32)
        dv_b = tl.zeros([SB, VB], dtype=tl.float32)
        for i in range(0, X - x0):
            x = X - 1 - i
            node = (p * X + x) * Y + yy
            s0, s1, t00, t01, t10, m0, m1, d, P1 = _column_gates(
                s_ptr, t_ptr, m_ptr, d_ptr, node, yy, col_ok
            )
            phi = tl.where(eye, t00[None, :], 0.0) + t01[:, None] * P1 * t10[None, :]
            mu = tl.where(eye, m0[None, :], 0.0) + t01[:, None] * P1 * m1[None, :]
            gamma = tl.where(eye, d[None, :], 0.0) + s1[:, None] * P1 * m1[None, :]
            place = (rows[:, None] == x * YB + yy[None, :]).to(tl.float32)
            w = tl.load(w_base + x * (SB * YB) + w_offs)
            gating = tl.dot(w, mu, input_precision=PRECISION)
            gating += tl.dot(place, gamma, input_precision=PRECISION)
            q_x = tl.load(
                q_ptr + node[:, None] * K + kk[None, :],
                mask=col_ok[:, None] & (kk[None, :] < K),
                other=0.0,
            ).to(tl.float32)
            dh_x = tl.load(
                dh_ptr + node[:, None] * V + vv[None, :],
                mask=col_ok[:, None] & (vv[None, :] < V),
                other=0.0,
            ).to(tl.float32)
            scores = tl.dot(k_b, tl.trans(q_x), input_precision=PRECISION)  # [SB, YB]
            e = tl.dot(v_b, tl.trans(dh_x), input_precision=PRECISION)  # dh_n·v_n'
            ge = gating * e
            dv_b += tl.dot(scores * gating, dh_x, input_precision=PRECISION)
            dk_b += tl.dot(ge, q_x, input_precision=PRECISION)
            dq_x = tl.dot(tl.trans(ge), k_b, input_precision=PRECISION)
            tl.atomic_add(
                dq_ptr + node[:, None] * K + kk[None, :],
                dq_x,
                mask=col_ok[:, None] & (kk[None, :] < K),
                sem="relaxed",
            )
            dg = e * scores  # ∂L/∂G_x of this block's sources
            d_mu = tl.dot(tl.trans(w), dg, input_precision=PRECISION)
            d_gamma = tl.dot(tl.trans(place), dg, input_precision=PRECISION)
            d_phi = tl.dot(tl.trans(w), u, input_precision=PRECISION)
            d_psi = tl.dot(tl.trans(place), u, input_precision=PRECISION)
            u = tl.dot(dg, tl.trans(mu), input_precision=PRECISION) + tl.dot(
                u, tl.trans(phi), input_precision=PRECISION
            )
            # Ψ, Φ, Μ, Γ → gate values through the closed form of grid_columns
            a_psi = d_psi * P1
            a_phi = d_phi * P1
            a_mu = d_mu * P1
            a_gamma = d_gamma * P1
            ds0 = tl.sum(tl.where(eye, d_psi, 0.0), axis=0)
            dt00 = tl.sum(tl.where(eye, d_phi, 0.0), axis=0)
            dm0 = tl.sum(tl.where(eye, d_mu, 0.0), axis=0)
            dd = tl.sum(tl.where(eye, d_gamma, 0.0), axis=0)
            ds1 = tl.sum(a_psi * t10[None, :] + a_gamma * m1[None, :], axis=1)
            dt01 = tl.sum(a_phi * t10[None, :] + a_mu * m1[None, :], axis=1)
            dt10 = tl.sum(a_psi * s1[:, None] + a_phi * t01[:, None], axis=0)
            dm1 = tl.sum(a_mu * t01[:, None] + a_gamma * s1[:, None], axis=0)
            d_p1 = (d_psi * s1[:, None] + d_phi * t01[:, None]) * t10[None, :] + (
                d_mu * t01[:, None] + d_gamma * s1[:, None]
            ) * m1[None, :]
            d_p1 = tl.where(below, d_p1, 0.0)
            z = tl.dot(d_p1, tl.trans(P1), input_precision=PRECISION)
            dt11 = tl.sum(P1 * z, axis=0)
            tl.atomic_add(ds_ptr + node * 2, ds0, mask=col_ok, sem="relaxed")
            tl.atomic_add(ds_ptr + node * 2 + 1, ds1, mask=col_ok, sem="relaxed")
            tl.atomic_add(dt_ptr + node * 4, dt00, mask=col_ok, sem="relaxed")
            tl.atomic_add(dt_ptr + node * 4 + 1, dt01, mask=col_ok, sem="relaxed")
            tl.atomic_add(dt_ptr + node * 4 + 2, dt10, mask=col_ok, sem="relaxed")
            tl.atomic_add(dt_ptr + node * 4 + 3, dt11, mask=col_ok, sem="relaxed")
            tl.atomic_add(dm_ptr + node * 2, dm0, mask=col_ok, sem="relaxed")
            tl.atomic_add(dm_ptr + node * 2 + 1, dm1, mask=col_ok, sem="relaxed")
            tl.atomic_add(dd_ptr + node, dd, mask=col_ok, sem="relaxed")
        tl.store(dk_ptr + src[:, None] * K + kk[None, :], dk_b, mask=k_mask)
        tl.store(dv_ptr + src[:, None] * V + vv[None, :], dv_b, mask=v_mask)


def grid_parallel_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    grad_h: torch.Tensor,
    *,
    scratch_bytes: int = SCRATCH_BYTES,
) -> tuple[torch.Tensor, ...]:
    """Gradients (dq, dk, dv, dsource, dtransition, dmark, ddirect) of the parallel 2D op for
    the cotangent ``grad_h [B,H,X,Y,V]``, each in its input's dtype (computed in float32).

    Inputs as for ``grid_triton.plstm_2d_parallel_triton`` (q, k, v in float32 or bf16; grids
    with X·max(16, next_pow2(Y)) ≤ 1024 nodes), on a CUDA device — or on CPU tensors under
    ``TRITON_INTERPRET=1``. The float32 W scratch of each launch stays under
    ``scratch_bytes`` (at least one (b, h) grid per launch).
    """
    B, H, X, Y, K = q.shape
    V = v.shape[-1]
    P = B * H
    inputs = (q, k, v, source, transition, mark, direct)
    flat = [t.reshape(P, *t.shape[2:]).contiguous() for t in (*inputs, grad_h)]
    grads = [torch.zeros(t.shape, device=t.device, dtype=torch.float32) for t in flat[:7]]
    YB = max(16, next_pow2(Y))
    SB, warps = LAUNCH_SMALL if X * YB <= SMALL_GRID_NODES else LAUNCH_LARGE
    nblocks = -(-X * YB // SB)
    per_grid = nblocks * X * SB * YB  # W scratch floats of one (b, h)
    chunk = max(1, min(P, scratch_bytes // (4 * per_grid)))
    scratch = torch.empty(chunk * per_grid, device=q.device, dtype=torch.float32)
    for start in range(0, P, chunk):
        part = slice(start, min(P, start + chunk))
        _grid_parallel_bwd[(part.stop - part.start, nblocks)](
            *(t[part] for t in flat),
            *(g[part] for g in grads),
            scratch,
            X,
            Y,
            K,
            V,
            YB=YB,
            KB=max(16, next_pow2(K)),
            VB=max(16, next_pow2(V)),
            SB=SB,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
            num_warps=warps,
        )
    return tuple(g.reshape(t.shape).to(t.dtype) for g, t in zip(grads, inputs, strict=True))
