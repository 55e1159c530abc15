"""Fused Triton forward and backward of a pLSTM grid layer's four orientations (paper eq. 5-7,
A.4 column form, A.7 multi-directional form), reading the projection z in place.

Computes :func:`plstm_core.ops.grid_mix.grid_mix_reference` (method "parallel") for
z ``[B,X,Y,F]`` laid out by :class:`~plstm_core.ops.grid_mix.GridMixLayout` and returns
h ``[B,X,Y,H,V]`` = Σ over the four orientations.

One program takes one grid (b, h), one orientation o and a block of SB source nodes in that
orientation's (flipped) order, like ``grid_triton``: it walks the columns of its DAG cover and
keeps, per source, the signal W ``[SB, Y]`` arriving on the incoming direction-0 edges. The
orientation is index arithmetic: logical (x, y) of orientation o is stored at
(x or X−1−x, y or Y−1−y), so q, k, v and the logits are loaded from z without any flipped copy.
The Source, Mark, Direct gates (sigmoid) and the P- / D-mode transitions (tanh(5·logit),
γα / γ(1−α)) are computed from the logits in registers, per column. Every orientation adds its
output into one float32 result (atomic adds), so the sum over orientations costs nothing.

The backward kernel recomputes W (forward walk into a scratch buffer), walks the columns back
with the adjoint U (see ``grid_triton_bwd``) and writes dz: dq, dk·K^-1/2, dv and the logit
gradients through the activations' derivatives, all atomic adds into one float32 dz.

Cost per grid and orientation, N_pad = X·YB with YB = max(16, next_pow2(Y)) ≤ 1024/X:
forward O(N_pad²·(K + V + 4·YB)) FLOPs, backward O(N_pad²·(3K + 2V + 12·YB)); memory traffic
O(B·X·Y·F) for z, O(B·X·Y·H·V) for h, plus the backward's W scratch (4·B·H·4·N_pad² bytes,
launched in chunks under ``SCRATCH_BYTES``). Nothing else of size B·H·X·Y·O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from plstm_core.ops.grid_mix import GridMixLayout, check_projection
from plstm_core.ops.sizes import next_pow2

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the PyTorch reference serves every call
    triton = None

MAX_NODES = 1024  # X·YB; larger grids run other methods
# (sources per program SB, warps), from bench/tune_grid_mix.py on an H100 (K = V = 64): with
# few grids (batch 1: 12 of them) small blocks spread the work over more SMs; with many, bf16
# inputs run fastest in 64-source blocks of one warp (14×14, batch 256: 0.67 ms vs 0.76 ms with
# 32 sources, 0.87 ms before the bf16 operands), float32 ones (IEEE products, no tensor-core
# shortcut) in 32-source blocks; the backward in 32-source blocks of two warps (12×12, batch
# 128: 1.49 ms vs 1.92 ms with four).
FEW_GRIDS = 256
FWD_LAUNCH = {
    "few": (16, 4),
    "many bf16": (64, 1),
    "many fp32": (32, 1),
    "large grid bf16": (64, 2),
    "large grid fp32": (64, 2),
}
BWD_LAUNCH = {
    "few": (32, 4),
    "many bf16": (32, 2),
    "many fp32": (32, 4),
    "large grid bf16": (64, 4),
    "large grid fp32": (64, 4),
}
SMALL_GRID_NODES = 256
SCRATCH_BYTES = 1 << 30
MODE_IDS = {"P": 0, "D": 1, "U": 2}


def grid_mix_supported(z: torch.Tensor, layout: GridMixLayout) -> bool:
    """Whether :func:`grid_mix_fused` can serve z ``[B,X,Y,F]``: CUDA, Triton, float32 or bf16,
    X·max(16, next_pow2(Y)) ≤ 1024, K and V ≤ 128, and neither ``PLSTM_FUSED_LAYER=0`` nor
    ``PLSTM_DISABLE_TRITON=1`` set (either restores the four separate orientations)."""
    if triton is None or not z.is_cuda or os.environ.get("PLSTM_DISABLE_TRITON") == "1":
        return False
    if os.environ.get("PLSTM_FUSED_LAYER") == "0":
        return False
    if z.dtype not in (torch.float32, torch.bfloat16) or z.dim() != 4:
        return False
    X, Y = z.shape[1], z.shape[2]
    return (
        X * max(16, next_pow2(Y)) <= MAX_NODES
        and layout.qk_head_dim <= 128
        and layout.v_head_dim <= 128
    )


if triton is not None:

    @triton.jit
    def _times(a, b):
        return a * b

    @triton.jit
    def _tanh5(x):
        return 2.0 * tl.sigmoid(10.0 * x) - 1.0  # tanh(5x)

    @triton.jit
    def _logit(z_ptr, node, col, F, ok):
        return tl.load(z_ptr + node * F + col, mask=ok, other=0.0).to(tl.float32)

    @triton.jit
    def _t11(z_ptr, node, t_col, F, ok, MODE: tl.constexpr):
        """The transition "vertical stays vertical" of the nodes ``node`` [YB]."""
        if MODE == 0:
            a = tl.sigmoid(_logit(z_ptr, node, t_col, F, ok))
            return _tanh5(_logit(z_ptr, node, t_col + 1, F, ok)) * (1.0 - a)
        elif MODE == 1:
            return _tanh5(_logit(z_ptr, node, t_col + 2, F, ok))
        else:
            return _tanh5(_logit(z_ptr, node, t_col + 3, F, ok))

    @triton.jit
    def _column(z_ptr, node, prev, yy, ok, F, s_col, m_col, d_col, t_col, MODE: tl.constexpr):
        """Gates of one column [YB] (zero outside the grid) and its path products P1
        [YB, YB], P1[y', y] = Π_{y' < r < y} t11[r]; also the activations the backward needs:
        a (P-mode angle α, else 0) and g (P-mode decay γ, else 0)."""
        s = tl.where(ok, tl.sigmoid(_logit(z_ptr, node, s_col, F, ok)), 0.0)
        m = tl.where(ok, tl.sigmoid(_logit(z_ptr, node, m_col, F, ok)), 0.0)
        d = tl.where(ok, tl.sigmoid(_logit(z_ptr, node, d_col, F, ok)), 0.0)
        l0 = _logit(z_ptr, node, t_col, F, ok)
        l1 = _logit(z_ptr, node, t_col + 1, F, ok)
        if MODE == 0:
            a = tl.sigmoid(l0)
            g = _tanh5(l1)
            t00 = g * a
            t01 = g * (1.0 - a)
            t10 = t00
            t11 = t01
        elif MODE == 1:
            a = l0 * 0.0
            g = a
            t00 = _tanh5(l0)
            t01 = a
            t10 = _tanh5(l1)
            t11 = _tanh5(_logit(z_ptr, node, t_col + 2, F, ok))
        else:
            a = l0 * 0.0
            g = a
            t00 = _tanh5(l0)
            t01 = _tanh5(l1)
            t10 = _tanh5(_logit(z_ptr, node, t_col + 2, F, ok))
            t11 = _tanh5(_logit(z_ptr, node, t_col + 3, F, ok))
        t00 = tl.where(ok, t00, 0.0)
        t01 = tl.where(ok, t01, 0.0)
        t10 = tl.where(ok, t10, 0.0)
        t11 = tl.where(ok, t11, 0.0)
        has_prev = ok & (yy >= 1)
        t11_prev = tl.where(has_prev, _t11(z_ptr, prev, t_col, F, has_prev, MODE), 1.0)
        below = yy[:, None] < yy[None, :]
        walk = tl.where(yy[None, :] - 1 > yy[:, None], t11_prev[None, :], 1.0)
        P1 = tl.where(below, tl.associative_scan(walk, 1, _times), 0.0)
        return s, m, d, t00, t01, t10, t11, a, g, P1

    @triton.jit
    def _program_grid(pid, H, X, Y, SB: tl.constexpr, YB: tl.constexpr):
        """Decode (b, head, orientation) of program ``pid`` and its source rows: logical
        rows = block·SB + [0, SB), their validity and their stored node index."""
        o = pid % 4
        bh = pid // 4
        head = bh % H
        b = bh // H
        fx = o % 2
        fy = o // 2
        block = tl.program_id(1)
        rows = block * SB + tl.arange(0, SB)
        row_x = rows // YB
        row_y = rows % YB
        src_ok = (row_x < X) & (row_y < Y)
        src_x = tl.where(fx == 1, X - 1 - row_x, row_x)
        src_y = tl.where(fy == 1, Y - 1 - row_y, row_y)
        src = (b * X + src_x) * Y + src_y
        return o, head, b, fx, fy, block, rows, src_ok, src

    @triton.jit
    def _grid_mix_fwd(
        z_ptr,
        h_ptr,
        X,
        Y,
        H,
        F,
        K,
        V,
        k_off,
        v_off,
        s_off,
        m_off,
        d_off,
        t_off,
        key_scale,
        MODE: tl.constexpr,
        NT: tl.constexpr,
        YB: tl.constexpr,
        KB: tl.constexpr,
        VB: tl.constexpr,
        SB: tl.constexpr,
        PRECISION: tl.constexpr,
        DOT: tl.constexpr,
    ):
        o, head, b, fx, fy, block, rows, src_ok, src = _program_grid(
            tl.program_id(0), H, X, Y, SB, YB
        )
        gate = o * H + head
        s_col = s_off + gate
        m_col = m_off + gate
        d_col = d_off + gate
        t_col = t_off + gate * NT
        yy = tl.arange(0, YB)
        kk = tl.arange(0, KB)
        vv = tl.arange(0, VB)
        eye = yy[:, None] == yy[None, :]
        col_ok = yy < Y
        y_node = tl.where(fy == 1, Y - 1 - yy, yy)
        y_prev = tl.where(fy == 1, Y - yy, yy - 1)
        k_b = (
            tl.load(
                z_ptr + src[:, None] * F + k_off + head * K + kk[None, :],
                mask=src_ok[:, None] & (kk[None, :] < K),
                other=0.0,
            ).to(tl.float32)
            * key_scale
        ).to(DOT)
        v_b = tl.load(
            z_ptr + src[:, None] * F + v_off + head * V + vv[None, :],
            mask=src_ok[:, None] & (vv[None, :] < V),
            other=0.0,
        ).to(DOT)
        w = tl.zeros([SB, YB], dtype=tl.float32)
        for x in range((block * SB) // YB, X):
            col = b * X + tl.where(fx == 1, X - 1 - x, x)
            node = col * Y + y_node
            prev = col * Y + y_prev
            s, m, d, t00, t01, t10, _t11, _a, _g, P1 = _column(
                z_ptr, node, prev, yy, col_ok, F, s_col, m_col, d_col, t_col, MODE
            )
            psi = tl.where(eye, s[None, :], 0.0) + s[:, None] * P1 * t10[None, :]
            phi = tl.where(eye, t00[None, :], 0.0) + t01[:, None] * P1 * t10[None, :]
            mu = tl.where(eye, m[None, :], 0.0) + t01[:, None] * P1 * m[None, :]
            gamma = tl.where(eye, d[None, :], 0.0) + s[:, None] * P1 * m[None, :]
            place = (rows[:, None] == x * YB + yy[None, :]).to(tl.float32)
            gating = tl.dot(w, mu, input_precision=PRECISION)
            gating += tl.dot(place, gamma, input_precision=PRECISION)
            q_x = tl.load(
                z_ptr + node[:, None] * F + head * K + kk[None, :],
                mask=col_ok[:, None] & (kk[None, :] < K),
                other=0.0,
            ).to(DOT)
            scores = tl.dot(k_b, tl.trans(q_x), input_precision=PRECISION)
            h_x = tl.dot(tl.trans((scores * gating).to(DOT)), v_b, input_precision=PRECISION)
            tl.atomic_add(
                h_ptr + node[:, None] * (H * V) + head * V + vv[None, :],
                h_x,
                mask=col_ok[:, None] & (vv[None, :] < V),
                sem="relaxed",
            )
            w = tl.dot(w, phi, input_precision=PRECISION)
            w += tl.dot(place, psi, input_precision=PRECISION)

    @triton.jit
    def _grid_mix_bwd(
        z_ptr,
        dh_ptr,
        dz_ptr,
        w_ptr,
        p_offset,
        X,
        Y,
        H,
        F,
        K,
        V,
        k_off,
        v_off,
        s_off,
        m_off,
        d_off,
        t_off,
        key_scale,
        MODE: tl.constexpr,
        NT: tl.constexpr,
        YB: tl.constexpr,
        KB: tl.constexpr,
        VB: tl.constexpr,
        SB: tl.constexpr,
        PRECISION: tl.constexpr,
        DOT: tl.constexpr,
    ):
        o, head, b, fx, fy, block, rows, src_ok, src = _program_grid(
            tl.program_id(0) + p_offset, H, X, Y, SB, YB
        )
        gate = o * H + head
        s_col = s_off + gate
        m_col = m_off + gate
        d_col = d_off + gate
        t_col = t_off + gate * NT
        yy = tl.arange(0, YB)
        kk = tl.arange(0, KB)
        vv = tl.arange(0, VB)
        eye = yy[:, None] == yy[None, :]
        below = yy[:, None] < yy[None, :]
        col_ok = yy < Y
        y_node = tl.where(fy == 1, Y - 1 - yy, yy)
        y_prev = tl.where(fy == 1, Y - yy, yy - 1)
        k_mask = src_ok[:, None] & (kk[None, :] < K)
        v_mask = src_ok[:, None] & (vv[None, :] < V)
        k_b = (
            tl.load(
                z_ptr + src[:, None] * F + k_off + head * K + kk[None, :], mask=k_mask, other=0.0
            ).to(tl.float32)
            * key_scale
        ).to(DOT)
        v_b = tl.load(
            z_ptr + src[:, None] * F + v_off + head * V + vv[None, :], mask=v_mask, other=0.0
        ).to(DOT)
        x0 = (block * SB) // YB
        w_base = w_ptr + ((tl.program_id(0) * tl.num_programs(1) + block) * X) * (SB * YB)
        w_offs = tl.arange(0, SB)[:, None] * YB + yy[None, :]

        # forward walk: W_x of this block's sources, kept in the scratch buffer
        w = tl.zeros([SB, YB], dtype=tl.float32)
        for x in range(x0, X):
            tl.store(w_base + x * (SB * YB) + w_offs, w)
            col = b * X + tl.where(fx == 1, X - 1 - x, x)
            s, m, d, t00, t01, t10, _t11, _a, _g, P1 = _column(
                z_ptr,
                col * Y + y_node,
                col * Y + y_prev,
                yy,
                col_ok,
                F,
                s_col,
                m_col,
                d_col,
                t_col,
                MODE,
            )
            psi = tl.where(eye, s[None, :], 0.0) + s[:, None] * P1 * t10[None, :]
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
            col = b * X + tl.where(fx == 1, X - 1 - x, x)
            node = col * Y + y_node
            s, m, d, t00, t01, t10, t11, a, g, P1 = _column(
                z_ptr, node, col * Y + y_prev, yy, col_ok, F, s_col, m_col, d_col, t_col, MODE
            )
            phi = tl.where(eye, t00[None, :], 0.0) + t01[:, None] * P1 * t10[None, :]
            mu = tl.where(eye, m[None, :], 0.0) + t01[:, None] * P1 * m[None, :]
            gamma = tl.where(eye, d[None, :], 0.0) + s[:, None] * P1 * m[None, :]
            place = (rows[:, None] == x * YB + yy[None, :]).to(tl.float32)
            w = tl.load(w_base + x * (SB * YB) + w_offs)
            gating = tl.dot(w, mu, input_precision=PRECISION)
            gating += tl.dot(place, gamma, input_precision=PRECISION)
            q_mask = col_ok[:, None] & (kk[None, :] < K)
            q_x = tl.load(
                z_ptr + node[:, None] * F + head * K + kk[None, :], mask=q_mask, other=0.0
            ).to(DOT)
            dh_x = tl.load(
                dh_ptr + node[:, None] * (H * V) + head * V + vv[None, :],
                mask=col_ok[:, None] & (vv[None, :] < V),
                other=0.0,
            ).to(DOT)
            scores = tl.dot(k_b, tl.trans(q_x), input_precision=PRECISION)  # [SB, YB]
            e = tl.dot(v_b, tl.trans(dh_x), input_precision=PRECISION)  # dh_n·v_n'
            ge = gating * e
            dv_b += tl.dot((scores * gating).to(DOT), dh_x, input_precision=PRECISION)
            dk_b += tl.dot(ge.to(DOT), q_x, input_precision=PRECISION)
            dq_x = tl.dot(tl.trans(ge.to(DOT)), k_b, input_precision=PRECISION)
            tl.atomic_add(
                dz_ptr + node[:, None] * F + head * K + kk[None, :],
                dq_x,
                mask=q_mask,
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
            # Ψ, Φ, Μ, Γ → gate values (closed form of grid_columns), source and mark being
            # shared by both edge directions
            a_psi = d_psi * P1
            a_phi = d_phi * P1
            a_mu = d_mu * P1
            a_gamma = d_gamma * P1
            ds = tl.sum(tl.where(eye, d_psi, 0.0), axis=0)
            ds += tl.sum(a_psi * t10[None, :] + a_gamma * m[None, :], axis=1)
            dt00 = tl.sum(tl.where(eye, d_phi, 0.0), axis=0)
            dm = tl.sum(tl.where(eye, d_mu, 0.0), axis=0)
            dm += tl.sum(a_mu * t01[:, None] + a_gamma * s[:, None], axis=0)
            dd = tl.sum(tl.where(eye, d_gamma, 0.0), axis=0)
            dt01 = tl.sum(a_phi * t10[None, :] + a_mu * m[None, :], axis=1)
            dt10 = tl.sum(a_psi * s[:, None] + a_phi * t01[:, None], axis=0)
            d_p1 = (d_psi * s[:, None] + d_phi * t01[:, None]) * t10[None, :] + (
                d_mu * t01[:, None] + d_gamma * s[:, None]
            ) * m[None, :]
            d_p1 = tl.where(below, d_p1, 0.0)
            zz = tl.dot(d_p1, tl.trans(P1), input_precision=PRECISION)
            dt11 = tl.sum(P1 * zz, axis=0)
            # gate values → logits
            row = node * F
            tl.atomic_add(dz_ptr + row + s_col, ds * s * (1.0 - s), mask=col_ok, sem="relaxed")
            tl.atomic_add(dz_ptr + row + m_col, dm * m * (1.0 - m), mask=col_ok, sem="relaxed")
            tl.atomic_add(dz_ptr + row + d_col, dd * d * (1.0 - d), mask=col_ok, sem="relaxed")
            if MODE == 0:
                da = dt00 + dt10  # coefficient of γα
                db = dt01 + dt11  # coefficient of γ(1−α)
                dl0 = g * (da - db) * a * (1.0 - a)
                dl1 = (a * da + (1.0 - a) * db) * 5.0 * (1.0 - g * g)
                tl.atomic_add(dz_ptr + row + t_col, dl0, mask=col_ok, sem="relaxed")
                tl.atomic_add(dz_ptr + row + t_col + 1, dl1, mask=col_ok, sem="relaxed")
            elif MODE == 1:
                tl.atomic_add(
                    dz_ptr + row + t_col,
                    dt00 * 5.0 * (1.0 - t00 * t00),
                    mask=col_ok,
                    sem="relaxed",
                )
                tl.atomic_add(
                    dz_ptr + row + t_col + 1,
                    dt10 * 5.0 * (1.0 - t10 * t10),
                    mask=col_ok,
                    sem="relaxed",
                )
                tl.atomic_add(
                    dz_ptr + row + t_col + 2,
                    dt11 * 5.0 * (1.0 - t11 * t11),
                    mask=col_ok,
                    sem="relaxed",
                )
            else:
                tl.atomic_add(
                    dz_ptr + row + t_col,
                    dt00 * 5.0 * (1.0 - t00 * t00),
                    mask=col_ok,
                    sem="relaxed",
                )
                tl.atomic_add(
                    dz_ptr + row + t_col + 1,
                    dt01 * 5.0 * (1.0 - t01 * t01),
                    mask=col_ok,
                    sem="relaxed",
                )
                tl.atomic_add(
                    dz_ptr + row + t_col + 2,
                    dt10 * 5.0 * (1.0 - t10 * t10),
                    mask=col_ok,
                    sem="relaxed",
                )
                tl.atomic_add(
                    dz_ptr + row + t_col + 3,
                    dt11 * 5.0 * (1.0 - t11 * t11),
                    mask=col_ok,
                    sem="relaxed",
                )
        tl.atomic_add(
            dz_ptr + src[:, None] * F + k_off + head * K + kk[None, :],
            dk_b * key_scale,
            mask=k_mask,
            sem="relaxed",
        )
        tl.atomic_add(
            dz_ptr + src[:, None] * F + v_off + head * V + vv[None, :],
            dv_b,
            mask=v_mask,
            sem="relaxed",
        )


def _sizes(z: torch.Tensor, layout: GridMixLayout, low_precision: bool) -> dict:
    """Launch constants shared by both kernels. ``low_precision`` (bf16 z only): the products
    with K and V (q·k, (q·k ⊙ G)·v and their adjoints) take bf16 operands, the gating walk
    stays in TF32."""
    _, X, Y, F = z.shape
    return {
        "X": X,
        "Y": Y,
        "H": layout.num_heads,
        "F": F,
        "K": layout.qk_head_dim,
        "V": layout.v_head_dim,
        "k_off": layout.k_offset,
        "v_off": layout.v_offset,
        "s_off": layout.source_offset,
        "m_off": layout.mark_offset,
        "d_off": layout.direct_offset,
        "t_off": layout.transition_offset,
        "key_scale": layout.key_scale,
        "MODE": MODE_IDS[layout.mode],
        "NT": layout.transition_logits,
        "YB": max(16, next_pow2(Y)),
        "KB": max(16, next_pow2(layout.qk_head_dim)),
        "VB": max(16, next_pow2(layout.v_head_dim)),
        # float32 inputs keep full float32 products; bf16 inputs get TF32 (10-bit mantissa)
        "PRECISION": "ieee" if z.dtype == torch.float32 else "tf32",
        "DOT": tl.bfloat16 if low_precision and z.dtype == torch.bfloat16 else tl.float32,
    }


def _launch_class(z: torch.Tensor, padded_nodes: int, layout: GridMixLayout) -> str:
    precision = "bf16" if z.dtype == torch.bfloat16 else "fp32"
    if padded_nodes > SMALL_GRID_NODES:
        return f"large grid {precision}"
    grids = z.shape[0] * layout.num_heads * layout.num_orientations
    return "few" if grids < FEW_GRIDS else f"many {precision}"


def _forward(z: torch.Tensor, layout: GridMixLayout, launch: Launch) -> torch.Tensor:
    B, X, Y, _ = z.shape
    H, V = layout.num_heads, layout.v_head_dim
    sizes = _sizes(z, layout, launch.low_precision)
    SB, warps = launch.forward or FWD_LAUNCH[_launch_class(z, X * sizes["YB"], layout)]
    h = torch.zeros(B, X, Y, H, V, device=z.device, dtype=torch.float32)
    grid = (B * H * layout.num_orientations, -(-X * sizes["YB"] // SB))
    _grid_mix_fwd[grid](z, h, **sizes, SB=SB, num_warps=warps)
    return h


def _backward(
    z: torch.Tensor, grad_h: torch.Tensor, layout: GridMixLayout, launch: Launch
) -> torch.Tensor:
    B, X = z.shape[:2]
    sizes = _sizes(z, layout, launch.low_precision)
    YB = sizes["YB"]
    SB, warps = launch.backward or BWD_LAUNCH[_launch_class(z, X * YB, layout)]
    nblocks = -(-X * YB // SB)
    programs = B * layout.num_heads * layout.num_orientations
    per_program = nblocks * X * SB * YB  # W scratch floats of one (b, h, o)
    chunk = max(1, min(programs, launch.scratch_bytes // (4 * per_program)))
    scratch = torch.empty(chunk * per_program, device=z.device, dtype=torch.float32)
    dz = torch.zeros(z.shape, device=z.device, dtype=torch.float32)
    grad_h = grad_h.contiguous()
    for start in range(0, programs, chunk):
        count = min(chunk, programs - start)
        _grid_mix_bwd[(count, nblocks)](
            z, grad_h, dz, scratch, start, **sizes, SB=SB, num_warps=warps
        )
    return dz


class _GridMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, layout, launch):
        ctx.layout = layout
        ctx.launch = launch
        ctx.save_for_backward(z)
        return _forward(z, layout, launch)

    @staticmethod
    def backward(ctx, grad_h):
        (z,) = ctx.saved_tensors
        dz = _backward(z, grad_h, ctx.layout, ctx.launch)
        return dz.to(z.dtype), None, None


@dataclass(frozen=True)
class Launch:
    """Kernel settings: (sources per program, warps) of each kernel (None: by grid size),
    bf16 operands for the K/V products of bf16 z, and the cap of the backward's W scratch."""

    forward: tuple[int, int] | None = None
    backward: tuple[int, int] | None = None
    low_precision: bool = True
    scratch_bytes: int = SCRATCH_BYTES


def grid_mix_fused(
    z: torch.Tensor, layout: GridMixLayout, launch: Launch = Launch()
) -> torch.Tensor:
    """Σ over the four orientations of the parallel ``plstm_2d`` with the gates of z
    ``[B,X,Y,F]`` → h ``[B,X,Y,H,V]`` in float32, differentiable in z. Check
    :func:`grid_mix_supported` first (or run on CPU tensors under ``TRITON_INTERPRET=1``)."""
    check_projection(z, layout)
    z = z.contiguous()
    if torch.is_grad_enabled() and z.requires_grad:
        return _GridMix.apply(z, layout, launch)
    return _forward(z, layout, launch)
