"""The gates of a grid layer's four orientations from its projection z, for the CPU paths.

Orientation o = fx + 2·fy (the order of ``ORIENTATION_FLIPS``) runs ``plstm_2d``'s edges in
its frame, the grid flipped along x if fx and along y if fy. :func:`grid_gates` returns every
gate as one contiguous ``[P,fx,fy,X,Y]`` tensor (P = B·H), in stored order or, with
``x_frames``, with x in each orientation's frame order (reversed where fx = 1); y is always
in stored order. :func:`frame_inputs` unpacks q, k, v and the gates of all four orientations
into their full frames (x and y flipped) by one gather each, :func:`from_frames` sums outputs
back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from plstm_core.gates import gate_logits
from plstm_core.ops.grid_mix import ORIENTATION_FLIPS, GridMixLayout, transition_from_logits
from plstm_core.ops.workspace import cached_constant


def flip_x_frames(t: torch.Tensor) -> torch.Tensor:
    """t ``[P,fx,X,...]``: reverse the x axis (dim 2) where fx = 1 (stored order ↔ frame)."""
    return torch.cat([t[:, :1], t[:, 1:].flip(2)], dim=1)


@dataclass(frozen=True)
class GridGates:
    """Gates ``[P,fx,fy,X,Y]``: Source and Mark (shared by both edge directions) and the
    Transition entries ``t<in><out>`` (edge direction 0 along x, 1 along y). X may be padded
    with zero-gate columns after the stored grid: no path to a real node crosses them."""

    source: torch.Tensor
    mark: torch.Tensor
    t00: torch.Tensor
    t01: torch.Tensor
    t10: torch.Tensor
    t11: torch.Tensor


def grid_gates(
    z: torch.Tensor,
    layout: GridMixLayout,
    dtype: torch.dtype,
    padded_x: int,
    *,
    x_frames: bool = False,
) -> tuple[GridGates, torch.Tensor]:
    """Gates from z ``[B,X,Y,F]`` in ``dtype``: the per-orientation gates (X zero-padded to
    ``padded_x``; x in frame order with ``x_frames``) and direct ``[B·H,X,Y]`` summed over the
    four orientations (stored order). O(B·X·Y·O·H) time and memory."""
    B, X, Y, _ = z.shape
    H, O = layout.num_heads, len(ORIENTATION_FLIPS)
    logits = gate_logits(z[..., layout.source_offset :]).to(dtype)
    split = layout.transition_offset - layout.source_offset
    sig = torch.sigmoid(logits[..., :split]).unflatten(-1, (3, O, H))  # source, mark, direct
    direct = sig[..., 2, :, :].sum(-2).permute(0, 3, 1, 2).reshape(B * H, X, Y)
    t = transition_from_logits(
        logits[..., split:].unflatten(-1, (O, H, layout.transition_logits)), layout.mode
    )  # [B,X,Y,O,H,2,2]
    packed = torch.cat([sig[..., :2, :, :], t.flatten(-2).permute(0, 1, 2, 5, 3, 4)], dim=3)
    # [B,X,Y,6,(fy,fx),H] → [6,B·H,fx,fy,X,Y]
    packed = packed.unflatten(4, (2, 2)).permute(3, 0, 6, 5, 4, 1, 2)
    packed = packed.reshape(6, B * H, 2, 2, X, Y)
    if padded_x > X:
        packed = F.pad(packed, (0, 0, 0, padded_x - X))
    if x_frames:
        packed = torch.cat([packed[:, :, :1], packed[:, :, 1:].flip(4)], dim=2)
    return GridGates(*packed.unbind(0)), direct


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
