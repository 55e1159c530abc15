"""The four-orientation pLSTM of a 2D layer from ONE projection of the tokens (paper B.1, A.7).

A pLSTM grid layer projects every token once, ``z = x·Wᵀ + b``, to q, k, v and the gate logits of
all four orientations, then sums the outputs of :func:`plstm_core.ops.grid.plstm_2d` over the four
DAG covers of the grid (flip none, x, y, both). :func:`grid_mix` takes that projection ``z``
``[B,X,Y,F]`` in its stored (unflipped) order and returns the summed output ``[B,X,Y,H,V]``.

The columns of z, in this order (:class:`GridMixLayout` holds the offsets), O = 4 orientations:

- q ``[H·K]``, k ``[H·K]`` (scaled by K^-1/2 here), v ``[H·V]`` — head-major;
- source, mark, direct logits ``[O·H]`` each, orientation-major (sigmoid gates; source and mark
  shared by both edge directions);
- transition logits ``[O·H·n]`` with n = 2 (P-mode: angle α and decay γ,
  T = γ·[[α, α], [1−α, 1−α]]), 3 (D-mode: T00, T10, T11 with T01 = 0) or 4 (U: free entries),
  every transition inside ``tanh(5·logit)`` (paper Table 4).

Two implementations compute the same function:

- :func:`grid_mix_reference`: unpack z into q, k, v and the gate tensors, flip them into each
  orientation and run ``plstm_2d`` with any method (the unfused layer; any device);
- ``grid_mix_triton.grid_mix_fused`` (CUDA + Triton, method "parallel"): one kernel reads z in
  place, indexes the orientations instead of flipping, computes the gates from the logits inside
  the kernel and accumulates the four orientations into one output; its backward kernel writes
  dz directly. Nothing of size B·H·X·Y·O is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plstm_core.gates import (
    TRANSITION_SCALE,
    dmode_grid_transition,
    gate_logits,
    pmode_grid_transition,
    unconstrained_grid_transition,
)
from plstm_core.ops.grid import plstm_2d

ORIENTATION_FLIPS: tuple[tuple[bool, bool], ...] = (
    (False, False),  # right-down: edges (x,y)→(x+1,y) and (x,y)→(x,y+1)
    (True, False),  # left-down: x flipped
    (False, True),  # right-up: y flipped
    (True, True),  # left-up: both flipped
)
"""The four DAG covers of the grid, as (flip x, flip y) of the input before ``plstm_2d``."""

NUM_TRANSITION_LOGITS = {"P": 2, "D": 3, "U": 4}


@dataclass(frozen=True)
class GridMixLayout:
    """Where q, k, v and the gate logits sit in the last axis of the projection z."""

    num_heads: int
    qk_head_dim: int
    v_head_dim: int
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in NUM_TRANSITION_LOGITS:
            modes = list(NUM_TRANSITION_LOGITS)
            raise ValueError(f"mode must be one of {modes}, got {self.mode!r}")

    @property
    def num_orientations(self) -> int:
        return len(ORIENTATION_FLIPS)

    @property
    def transition_logits(self) -> int:
        return NUM_TRANSITION_LOGITS[self.mode]

    @property
    def k_offset(self) -> int:
        return self.num_heads * self.qk_head_dim

    @property
    def v_offset(self) -> int:
        return 2 * self.num_heads * self.qk_head_dim

    @property
    def source_offset(self) -> int:
        return self.v_offset + self.num_heads * self.v_head_dim

    @property
    def mark_offset(self) -> int:
        return self.source_offset + self.num_orientations * self.num_heads

    @property
    def direct_offset(self) -> int:
        return self.mark_offset + self.num_orientations * self.num_heads

    @property
    def transition_offset(self) -> int:
        return self.direct_offset + self.num_orientations * self.num_heads

    @property
    def width(self) -> int:
        """F, the number of columns of z."""
        return self.transition_offset + self.num_orientations * self.num_heads * (
            self.transition_logits
        )

    @property
    def key_scale(self) -> float:
        return self.qk_head_dim**-0.5


def check_projection(z: torch.Tensor, layout: GridMixLayout) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 4 or z.shape[-1] != layout.width:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z must have shape [B,X,Y,F] with F = {layout.width}, got {got}")
    if 0 in z.shape:
        raise ValueError(f"z must have positive B, X and Y, got shape {tuple(z.shape)}")


def transition_from_logits(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """logits ``[..., n]`` → transition ``[..., 2, 2]`` (``[..., in, out]``) for ``mode``."""
    if mode == "P":
        return pmode_grid_transition(logits[..., 0], logits[..., 1], scale=TRANSITION_SCALE)
    if mode == "D":
        return dmode_grid_transition(logits, scale=TRANSITION_SCALE)
    return unconstrained_grid_transition(logits, scale=TRANSITION_SCALE)


def unpack_qkv(
    z: torch.Tensor, layout: GridMixLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z ``[B,X,Y,F]`` → q, k ``[B,H,X,Y,K]`` (k scaled by K^-1/2), v ``[B,H,X,Y,V]``."""
    B, X, Y, _ = z.shape
    H, K, V = layout.num_heads, layout.qk_head_dim, layout.v_head_dim

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, X, Y, H, -1).permute(0, 3, 1, 2, 4)

    q = heads(z[..., : H * K])
    k = heads(z[..., layout.k_offset : layout.v_offset]) * layout.key_scale
    v = heads(z[..., layout.v_offset : layout.v_offset + H * V])
    return q, k, v


def unpack_gates(z: torch.Tensor, layout: GridMixLayout) -> dict[str, torch.Tensor]:
    """All gates of all orientations from z ``[B,X,Y,F]``, in the UNflipped node order:
    source, mark ``[O,B,H,X,Y,2]``, transition ``[O,B,H,X,Y,2,2]``, direct ``[O,B,H,X,Y]``;
    float32 for bf16/fp16 z (see :func:`gate_logits`), else z's dtype."""
    B, X, Y, _ = z.shape
    H, O = layout.num_heads, layout.num_orientations

    def per_head(start: int, stop: int) -> torch.Tensor:  # [B,X,Y,O*H*r] -> [O,B,H,X,Y,r]
        t = gate_logits(z[..., start:stop])
        return t.reshape(B, X, Y, O, H, -1).permute(3, 0, 4, 1, 2, 5)

    source = torch.sigmoid(per_head(layout.source_offset, layout.mark_offset))
    mark = torch.sigmoid(per_head(layout.mark_offset, layout.direct_offset))
    direct = torch.sigmoid(per_head(layout.direct_offset, layout.transition_offset))[..., 0]
    transition = transition_from_logits(
        per_head(layout.transition_offset, layout.width), layout.mode
    )
    return {
        "source": source.expand(-1, -1, -1, -1, -1, 2),
        "transition": transition,
        "mark": mark.expand(-1, -1, -1, -1, -1, 2),
        "direct": direct,
    }


def _flip_dims(flip_x: bool, flip_y: bool, x_dim: int, y_dim: int) -> list[int]:
    return [d for d, f in ((x_dim, flip_x), (y_dim, flip_y)) if f]


def orient(t: torch.Tensor, per_orientation: bool = False) -> torch.Tensor:
    """Stack the four DAG covers of a grid tensor into the batch axis.

    t ``[B,H,X,Y,...]`` (the same tensor for every orientation) or, with
    ``per_orientation``, ``[O,B,H,X,Y,...]`` → ``[O·B,H,X,Y,...]``, orientation o flipped
    by ``ORIENTATION_FLIPS[o]``.
    """
    parts = []
    for o, (fx, fy) in enumerate(ORIENTATION_FLIPS):
        part = t[o] if per_orientation else t
        dims = _flip_dims(fx, fy, 2, 3)
        parts.append(part.flip(dims) if dims else part)
    return torch.cat(parts, dim=0)


def unorient(t: torch.Tensor, *axes: tuple[int, int]) -> torch.Tensor:
    """Flip each orientation of ``t [O,...]`` back (on every (x, y) axis pair) and sum."""
    total = None
    for o, (fx, fy) in enumerate(ORIENTATION_FLIPS):
        dims = [d - 1 for x_dim, y_dim in axes for d in _flip_dims(fx, fy, x_dim, y_dim)]
        part = t[o].flip(dims) if dims else t[o]
        total = part if total is None else total + part
    return total


def grid_mix_reference(
    z: torch.Tensor, layout: GridMixLayout, *, method: str = "parallel", chunk_size: int = 16
) -> torch.Tensor:
    """Σ over the four orientations of ``plstm_2d(..., method=method)`` on the flipped inputs
    unpacked from z ``[B,X,Y,F]``; returns ``[B,X,Y,H,V]`` in the op's output dtype.

    The four orientations run as one batch of 4·B grids (one op call). Costs as in ``plstm_2d``
    times four, plus O(B·X·Y·O·H·(K+V)) for the flipped copies.
    """
    check_projection(z, layout)
    q, k, v = unpack_qkv(z, layout)
    g = unpack_gates(z, layout)
    source, transition, mark, direct = (
        orient(g[name], per_orientation=True) for name in ("source", "transition", "mark", "direct")
    )
    h = plstm_2d(
        orient(q),
        orient(k),
        orient(v),
        source,
        transition,
        mark,
        direct,
        method=method,
        chunk_size=chunk_size,
    )
    h = unorient(h.reshape(layout.num_orientations, *q.shape[:-1], -1), (3, 4))  # [B,H,X,Y,V]
    return h.permute(0, 2, 3, 1, 4)
