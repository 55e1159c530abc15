"""The gates of a grid layer's four orientations from its projection z, for the CPU paths.

Orientation o = fx + 2·fy (the order of ``ORIENTATION_FLIPS``) runs ``plstm_2d``'s edges in
its frame, the grid flipped along x if fx and along y if fy. :func:`grid_gates` returns every
gate as a ``[P,fx,fy,X,Y]`` view (P = B·H) of one contiguous ``[6,P,fx,fy,X,Y]`` tensor, in
stored order or, with ``x_frames``, with x in each orientation's frame order (reversed where
fx = 1); y is always in stored order; O(B·X·Y·O·H) time and memory. :func:`frame_inputs`
unpacks q, k, v and the gates of all four orientations into their full frames (x and y
flipped) by one gather each, :func:`from_frames` sums outputs back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from plstm_core.gates import TRANSITION_SCALE, gate_logits
from plstm_core.ops.grid_mix import ORIENTATION_FLIPS, GridMixLayout, transition_from_logits
from plstm_core.ops.workspace import cached_constant

ENTRIES = ("t10", "source", "mark", "t01", "t00", "t11")
"""Order of the gates in :attr:`GridGates.packed`: source and mark adjacent (one sigmoid writes
both), (source, t01) and (t10, mark) each at a stride of 2, so that the closed form of the
column matrices (:func:`plstm_core.ops.grid_mix_summed.column_matrices`) reads them as views."""


class GridGates(NamedTuple):
    """Gates ``[P,fx,fy,X,Y]``: Source and Mark (shared by both edge directions) and the
    Transition entries ``t<in><out>`` (edge direction 0 along x, 1 along y), all views of
    ``packed`` ``[6,P,fx,fy,X,Y]`` (order :data:`ENTRIES`). X may be padded with zero-gate
    columns after the stored grid: no path to a real node crosses them."""

    packed: torch.Tensor
    t10: torch.Tensor
    source: torch.Tensor
    mark: torch.Tensor
    t01: torch.Tensor
    t00: torch.Tensor
    t11: torch.Tensor


def write_into(out: torch.Tensor, op: Callable[..., torch.Tensor], *args: object) -> None:
    """``out[...] = op(*args)``: straight into ``out`` (any strides) when no gradient is
    recorded, else by ``copy_`` (``out=`` forms do not support autograd)."""
    if torch.is_grad_enabled():
        out.copy_(op(*args))
    else:
        op(*args, out=out)


def _transition_entries(
    logits: torch.Tensor, sig: torch.Tensor, mode: str, out: torch.Tensor
) -> None:
    """Write the transition entries of logits ``[B,X,Y,O,H,n]`` (sig: their sigmoid) into out
    ``[6,B,X,Y,O,H]`` at their places in :data:`ENTRIES` (the arithmetic of
    ``transition_from_logits``)."""
    if mode == "P":  # t10 = t00 = γα, t11 = t01 = γ(1−α) (pmode_grid_matrix)
        alpha = sig[..., 0]
        gamma = torch.tanh(TRANSITION_SCALE * logits[..., 1])
        out[0:5:4].copy_(gamma * alpha)
        out[3:6:2].copy_(gamma * (1.0 - alpha))
    elif mode == "D":  # t01 = 0 (dmode_grid_transition); logits (t00, t10, t11)
        t = torch.tanh(TRANSITION_SCALE * logits)
        out[4:6].copy_(t[..., 0:3:2].movedim(-1, 0))
        out[0].copy_(t[..., 1])
        out[3].zero_()
    else:
        t = transition_from_logits(logits, mode)  # [..., in, out]
        for entry, (i, o) in (("t00", (0, 0)), ("t01", (0, 1)), ("t10", (1, 0)), ("t11", (1, 1))):
            out[ENTRIES.index(entry)].copy_(t[..., i, o])


def grid_gates(
    z: torch.Tensor,
    layout: GridMixLayout,
    dtype: torch.dtype,
    padded_x: int,
    *,
    x_frames: bool = False,
) -> tuple[GridGates, torch.Tensor]:
    """Gates from z ``[B,X,Y,F]`` in ``dtype``: the per-orientation gates (X zero-padded to
    ``padded_x``; x in frame order with ``x_frames``) and direct ``[B,H,X,Y]`` (a view)
    summed over the four orientations (stored order). O(B·X·Y·O·H) time and memory."""
    B, X, Y, _ = z.shape
    H, O, n = layout.num_heads, len(ORIENTATION_FLIPS), layout.transition_logits
    # contiguous, so that sigmoid and tanh take their vectorised paths (several times faster
    # than on short strided rows); the sigmoid of every logit, P-mode angles included
    logits = gate_logits(z[..., layout.source_offset :]).to(dtype).contiguous()
    sig = torch.sigmoid(logits)
    split = layout.transition_offset - layout.source_offset
    gates = logits.new_empty(len(ENTRIES), B, X, Y, O, H)
    sigmoid_gates = sig[..., :split].unflatten(-1, (3, O, H))  # source, mark, direct
    gates[1:3].copy_(sigmoid_gates[..., :2, :, :].movedim(3, 0))
    direct = sigmoid_gates[..., 2, :, :].sum(-2).permute(0, 3, 1, 2)
    _transition_entries(
        logits[..., split:].unflatten(-1, (O, H, n)),
        sig[..., split:].unflatten(-1, (O, H, n)),
        layout.mode,
        gates,
    )
    # [6,B,X,Y,(fy,fx),H] → [6,B,H,fx,fy,X,Y]
    gates = gates.unflatten(4, (2, 2)).permute(0, 1, 6, 5, 4, 2, 3)
    if padded_x == X and not x_frames:
        packed = gates.reshape(len(ENTRIES), B * H, 2, 2, X, Y)
        return GridGates(packed, *packed.unbind(0)), direct
    packed = gates.new_empty(len(ENTRIES), B, H, 2, 2, padded_x, Y)
    pad = padded_x - X
    if x_frames:  # fx = 1 in frame order: padding first, then the columns reversed
        packed[:, :, :, 0, :, :X].copy_(gates[:, :, :, 0])
        packed[:, :, :, 1, :, pad:].copy_(gates[:, :, :, 1].flip(-2))
        if pad:
            packed[:, :, :, 0, :, X:].zero_()
            packed[:, :, :, 1, :, :pad].zero_()
    else:
        packed[..., :X, :].copy_(gates)
        if pad:
            packed[..., X:, :].zero_()
    packed = packed.view(len(ENTRIES), B * H, 2, 2, padded_x, Y)
    return GridGates(packed, *packed.unbind(0)), direct


@cached_constant(maxsize=64)
def _frame_index(X: int, Y: int) -> torch.Tensor:
    """``[O,X·Y]``: index[o, n] is the stored node at frame node n of orientation o."""
    x = torch.arange(X)[:, None].expand(X, Y)
    y = torch.arange(Y)[None, :].expand(X, Y)
    rows = [
        ((X - 1 - x) if fx else x) * Y + ((Y - 1 - y) if fy else y) for fx, fy in ORIENTATION_FLIPS
    ]
    return torch.stack(rows).reshape(len(ORIENTATION_FLIPS), X * Y)


def to_frames(t: torch.Tensor, X: int, Y: int, shared: bool = False) -> torch.Tensor:
    """t ``[P,O·X·Y,C]`` (stored node order per orientation; with ``shared`` ``[P,X·Y,C]``, the
    same tensor for every orientation) → ``[P,O·X·Y,C]`` with orientation o in its frame order,
    or back (every flip is its own inverse). One index_select; O(P·O·X·Y·C)."""
    index = _frame_index(X, Y)
    if not shared:
        index = index + X * Y * torch.arange(index.shape[0])[:, None]
    return t.index_select(1, index.reshape(-1).to(t.device))


class FrameInputs(NamedTuple):
    """q, k, v and gates of the four orientations, each in its frame, grid-major (B·H·O
    leading, orientation fastest): qkv ``[P·O,X,Y,2K+V]`` (k scaled by K^-1/2), gates
    ``[P·O,X,Y,7]`` (source, mark, direct, t00, t01, t10, t11)."""

    qkv: torch.Tensor
    gates: torch.Tensor


def frame_inputs(z: torch.Tensor, layout: GridMixLayout, dtype: torch.dtype) -> FrameInputs:
    """Unpack z ``[B,X,Y,F]`` into every orientation's frame (``plstm_2d``'s inputs for the
    four DAG covers), in ``dtype``. O(B·X·Y·O·H·(2K+V)) time and memory."""
    B, X, Y, _ = z.shape
    H, K, V, O = layout.num_heads, layout.qk_head_dim, layout.v_head_dim, len(ORIENTATION_FLIPS)
    N, P = X * Y, B * H
    zc = z.to(dtype)
    q = zc[..., : H * K].reshape(B, N, H, K)
    k = zc[..., layout.k_offset : layout.v_offset].reshape(B, N, H, K) * layout.key_scale
    v = zc[..., layout.v_offset : layout.source_offset].reshape(B, N, H, V)
    qkv = torch.cat([q, k, v], dim=-1).transpose(1, 2).reshape(P, N, 2 * K + V)
    qkv = to_frames(qkv, X, Y, shared=True)
    logits = gate_logits(z[..., layout.source_offset :]).to(dtype).reshape(B, N, -1)
    split = layout.transition_offset - layout.source_offset
    sig = torch.sigmoid(logits[..., :split]).unflatten(-1, (3, O, H)).permute(0, 1, 3, 4, 2)
    t = transition_from_logits(
        logits[..., split:].unflatten(-1, (O, H, layout.transition_logits)), layout.mode
    ).flatten(-2)  # [B,N,O,H,4]
    gates = torch.cat([sig, t], dim=-1).permute(0, 3, 2, 1, 4).reshape(P, O * N, 7)
    gates = to_frames(gates, X, Y)
    return FrameInputs(qkv.reshape(P * O, X, Y, -1), gates.reshape(P * O, X, Y, 7))


def from_frames(h: torch.Tensor, B: int, X: int, Y: int) -> torch.Tensor:
    """h ``[B·H·O,X,Y,V]`` (each orientation in its frame) → Σ over orientations in stored
    order, ``[B,X,Y,H,V]``."""
    O, V = len(ORIENTATION_FLIPS), h.shape[-1]
    h = to_frames(h.reshape(-1, O * X * Y, V), X, Y).unflatten(1, (O, X * Y)).sum(1)
    return h.unflatten(0, (B, -1)).transpose(1, 2).reshape(B, X, Y, -1, V)
