"""Fused Triton forward of the parallel 2D op (paper eq. 7 with the column form of A.4).

Each source node's signal evolves independently, so one program takes one grid (b, h) and a
block of 32 or 64 source nodes. It walks the columns x from its sources' first column to X−1 and
keeps, per source, the signal arriving on the incoming direction-0 edges of the current column:
W ``[SB, Y]`` in registers. Per column it builds the closed-form column gates Ψ, Φ, Μ, Γ (see
``grid_columns``), reads out the gating block of the column's targets G_x = W·Μ + [Γ + D on the
diagonal], contracts it at once with the scores, h_x += ((K q_xᵀ) ⊙ G_x)ᵀ V (atomic adds across
source blocks), and advances W ← W·Φ + Ψ placed at the column's own rows. No N×N tensor ever
reaches memory.

Cost per grid: O(N²·(K + V + 2Y)) FLOPs, the same order as attention; O(N·(K+V)) memory
traffic plus O(N·V·X/64) atomic adds. Backward recomputes through the PyTorch path
(``grid._parallel``) under autograd only with ``PLSTM_TRITON_BACKWARD=0``; by default it runs
the fused kernel of ``grid_triton_bwd`` (12×12, B·H = 1536, bf16: fwd+bwd 1.9 ms vs 8.3 ms).
"""

from __future__ import annotations

import os

import torch

from plstm_core.ops.grid_triton_bwd import grid_parallel_backward
from plstm_core.ops.sizes import next_pow2

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the PyTorch path serves every call
    triton = None

MAX_NODES = 1024  # X·Y padded; beyond it the sequential columns lose to the PyTorch paths
# (source nodes per program, warps) by padded grid size, tuned on an H100: small grids are
# latency-bound, so more and smaller programs win; from 24×24 on, 64-source blocks do.
SMALL_GRID_NODES = 256
LAUNCH_SMALL = (32, 1)
LAUNCH_LARGE = (64, 2)


def triton_supported(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether :func:`plstm_2d_parallel_triton` can serve these inputs ``[B,H,X,Y,K|V]``."""
    if triton is None or not q.is_cuda or os.environ.get("PLSTM_DISABLE_TRITON") == "1":
        return False
    if q.dtype not in (torch.float32, torch.bfloat16) or q.dtype != v.dtype:
        return False
    _, _, X, Y, K = q.shape
    return X * max(16, next_pow2(Y)) <= MAX_NODES and K <= 128 and v.shape[-1] <= 128


if triton is not None:

    @triton.jit
    def _times(a, b):
        return a * b

    @triton.jit
    def _grid_parallel_fwd(
        q_ptr,
        k_ptr,
        v_ptr,
        s_ptr,
        t_ptr,
        m_ptr,
        d_ptr,
        h_ptr,
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
        below = yy[:, None] < yy[None, :]  # [y', y]
        eye = yy[:, None] == yy[None, :]
        col_ok = yy < Y
        k_b = tl.load(
            k_ptr + src[:, None] * K + kk[None, :],
            mask=src_ok[:, None] & (kk[None, :] < K),
            other=0.0,
        ).to(tl.float32)
        v_b = tl.load(
            v_ptr + src[:, None] * V + vv[None, :],
            mask=src_ok[:, None] & (vv[None, :] < V),
            other=0.0,
        ).to(tl.float32)
        w = tl.zeros([SB, YB], dtype=tl.float32)  # W rows of this program's sources
        for x in range((block * SB) // YB, X):
            base = (p * X + x) * Y
            node = base + yy
            s0 = tl.load(s_ptr + node * 2, mask=col_ok, other=0.0).to(tl.float32)
            s1 = tl.load(s_ptr + node * 2 + 1, mask=col_ok, other=0.0).to(tl.float32)
            t00 = tl.load(t_ptr + node * 4, mask=col_ok, other=0.0).to(tl.float32)
            t01 = tl.load(t_ptr + node * 4 + 1, mask=col_ok, other=0.0).to(tl.float32)
            t10 = tl.load(t_ptr + node * 4 + 2, mask=col_ok, other=0.0).to(tl.float32)
            t11_prev = tl.load(  # t11[y−1]
                t_ptr + node * 4 - 1, mask=col_ok & (yy >= 1), other=1.0
            ).to(tl.float32)
            m0 = tl.load(m_ptr + node * 2, mask=col_ok, other=0.0).to(tl.float32)
            m1 = tl.load(m_ptr + node * 2 + 1, mask=col_ok, other=0.0).to(tl.float32)
            d = tl.load(d_ptr + node, mask=col_ok, other=0.0).to(tl.float32)
            # P1[y', y] = Π_{y' < r < y} t11[r]: an inclusive scan of t11[r−1] over r > y'+1
            walk = tl.where(yy[None, :] - 1 > yy[:, None], t11_prev[None, :], 1.0)
            P1 = tl.where(below, tl.associative_scan(walk, 1, _times), 0.0)
            psi = tl.where(eye, s0[None, :], 0.0) + s1[:, None] * P1 * t10[None, :]
            phi = tl.where(eye, t00[None, :], 0.0) + t01[:, None] * P1 * t10[None, :]
            mu = tl.where(eye, m0[None, :], 0.0) + t01[:, None] * P1 * m1[None, :]
            gamma = tl.where(eye, d[None, :], 0.0) + s1[:, None] * P1 * m1[None, :]
            place = (rows[:, None] == x * YB + yy[None, :]).to(tl.float32)  # [SB, YB]
            gating = tl.dot(w, mu, input_precision=PRECISION)
            gating += tl.dot(place, gamma, input_precision=PRECISION)
            q_x = tl.load(
                q_ptr + node[:, None] * K + kk[None, :],
                mask=col_ok[:, None] & (kk[None, :] < K),
                other=0.0,
            ).to(tl.float32)
            scores = tl.dot(k_b, tl.trans(q_x), input_precision=PRECISION)
            h_x = tl.dot(tl.trans(scores * gating), v_b, input_precision=PRECISION)
            tl.atomic_add(
                h_ptr + node[:, None] * V + vv[None, :],
                h_x,
                mask=col_ok[:, None] & (vv[None, :] < V),
                sem="relaxed",
            )
            w = tl.dot(w, phi, input_precision=PRECISION)
            w += tl.dot(place, psi, input_precision=PRECISION)


def _launch(q, k, v, source, transition, mark, direct) -> torch.Tensor:
    B, H, X, Y, K = q.shape
    V = v.shape[-1]
    q, k, v, source, transition, mark, direct = (
        t.contiguous() for t in (q, k, v, source, transition, mark, direct)
    )
    h = torch.zeros(B, H, X, Y, V, device=q.device, dtype=torch.float32)
    YB = max(16, next_pow2(Y))
    SB, warps = LAUNCH_SMALL if X * YB <= SMALL_GRID_NODES else LAUNCH_LARGE
    _grid_parallel_fwd[(B * H, -(-X * YB // SB))](
        q,
        k,
        v,
        source,
        transition,
        mark,
        direct,
        h,
        X,
        Y,
        K,
        V,
        YB=YB,
        KB=max(16, next_pow2(K)),
        VB=max(16, next_pow2(V)),
        SB=SB,
        # float32 inputs keep full float32 products; bf16 inputs get TF32 (10-bit mantissa)
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps,
    )
    return h


def triton_backward_enabled() -> bool:
    """Whether the fused backward of ``grid_triton_bwd`` replaces the PyTorch recompute: on
    unless ``PLSTM_TRITON_BACKWARD=0`` (``PLSTM_DISABLE_TRITON=1`` turns it off too)."""
    return (
        os.environ.get("PLSTM_TRITON_BACKWARD") != "0"
        and os.environ.get("PLSTM_DISABLE_TRITON") != "1"
    )


class _GridParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, reference, *inputs):
        ctx.reference = reference
        ctx.save_for_backward(*inputs)
        return _launch(*inputs)

    @staticmethod
    def backward(ctx, grad_h):
        if triton_backward_enabled():
            grads = grid_parallel_backward(*ctx.saved_tensors, grad_h)
            needed = ctx.needs_input_grad[1:]
            return (None, *(g if n else None for g, n in zip(grads, needed, strict=True)))
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        wanted = [t for t in inputs if t.requires_grad]
        with torch.enable_grad():
            h = ctx.reference(*inputs)
            grads = iter(torch.autograd.grad(h, wanted, grad_h.to(h.dtype)))
        return (None, *(next(grads) if t.requires_grad else None for t in inputs))


def plstm_2d_parallel_triton(reference, q, k, v, source, transition, mark, direct):
    """The parallel op's forward by the fused kernel, in float32 (inputs in float32 or bf16;
    check :func:`triton_supported` first); the backward runs ``reference`` (the PyTorch
    parallel path, same signature) under autograd, or the fused Triton backward where
    :func:`triton_backward_enabled`."""
    inputs = (q, k, v, source, transition, mark, direct)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):
        return _launch(*inputs)
    return _GridParallel.apply(reference, *inputs)
