"""The pLSTM layer on a 2D grid of tokens: four orientations, P- or D-mode gates (paper B.1)."""

from __future__ import annotations

import torch
from torch import nn

from plstm_core.gates import (
    TRANSITION_SCALE,
    dmode_grid_transition,
    pmode_grid_transition,
    unconstrained_grid_transition,
)
from plstm_core.layers.heads import head_dims
from plstm_core.layers.norm import MultiHeadRMSNorm
from plstm_core.ops.contraction import gated_linear_attention
from plstm_core.ops.grid import grid_gating_matrix, plstm_2d

GRID_METHODS = ("parallel", "recurrent", "chunkwise", "fused")
MODES = ("P", "D", "U")
ORIENTATION_FLIPS: tuple[tuple[bool, bool], ...] = (
    (False, False),  # right-down: edges (x,y)→(x+1,y) and (x,y)→(x,y+1)
    (True, False),  # left-down: x flipped
    (False, True),  # right-up: y flipped
    (True, True),  # left-up: both flipped
)
"""The four DAG covers of the grid, as (flip x, flip y) of the input before ``plstm_2d``."""

NUM_TRANSITION_LOGITS = {"P": 2, "D": 3, "U": 4}

# Paper Table 4 (DESIGN.md section 4).
SOURCE_BIAS = -4.0
MARK_BIAS = -4.0
DIRECT_BIAS = -6.0
TRANSITION_BIAS = 1.0
ORIENTATION_BIAS_RANGE = (-2.0, 2.0)


def gate_logits(t: torch.Tensor) -> torch.Tensor:
    """Gate pre-activations in at least float32: bf16 rounding of γα + γ(1−α) could push a
    P-mode column sum above one (by ~0.4 %), which compounds along long paths."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _flip_dims(flip_x: bool, flip_y: bool, x_dim: int, y_dim: int) -> list[int]:
    return [d for d, f in ((x_dim, flip_x), (y_dim, flip_y)) if f]


def _orient(t: torch.Tensor, per_orientation: bool = False) -> torch.Tensor:
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


def _unorient(t: torch.Tensor, *axes: tuple[int, int]) -> torch.Tensor:
    """Flip each orientation of ``t [O,...]`` back (on every (x, y) axis pair) and sum."""
    total = None
    for o, (fx, fy) in enumerate(ORIENTATION_FLIPS):
        dims = [d - 1 for x_dim, y_dim in axes for d in _flip_dims(fx, fy, x_dim, y_dim)]
        part = t[o].flip(dims) if dims else t[o]
        total = part if total is None else total + part
    return total


class PLSTMGridLayer(nn.Module):
    """pLSTM over a 2D grid in all four orientations, followed by multi-head RMSNorm and an
    output projection (paper 4.3.1, A.7 "multi-directional form", B.1).

    Input x ``[B,X,Y,D]`` → output ``[B,X,Y,D]`` with D = ``dim``. Per node: q, k ``[H,K]``,
    v ``[H,V]`` (V = dim / num_heads, K = qk_dim / num_heads, qk_dim = dim by default; k is
    scaled by K^-1/2), and per orientation and head one Source, one Mark and one Direct gate
    (sigmoid; Source and Mark shared by both edge directions) and the Transition logits:

    - ``mode="P"``: an angle ("orientation") logit and a decay logit per head and orientation,
      T = γ·[[α, α], [1−α, 1−α]] (paper eq. 10, :func:`plstm_core.gates.pmode_grid_transition`);
    - ``mode="D"``: three logits, cross entry zero (:func:`plstm_core.gates.dmode_grid_transition`);
    - ``mode="U"``: four free logits, no constraint — unstable, a counter-example for tests.

    Each orientation (flip none, x, y, both) runs :func:`plstm_core.ops.grid.plstm_2d` on the
    flipped tokens with its own gates; the outputs are flipped back and summed (so the node's
    own term is Σ_o Direct_o · (q·k) v, an effective Direct gate in (0, 4)).
    ``method`` (an attribute; may be changed after construction):

    - ``"parallel"`` / ``"recurrent"`` / ``"chunkwise"``: four separate ``plstm_2d`` calls with
      that method (``chunk_size`` for chunkwise). Costs as in ``plstm_2d`` times four.
    - ``"fused"``: the four gating matrices (mapped back to the unflipped node order) are summed
      and ONE :func:`gated_linear_attention` contraction runs (paper A.7 multi-directional form);
      O(B·H·N²·(K+V)) time for the contraction plus four gating constructions, O(B·H·N²) memory.

    Initialisation (paper Table 4): gate weights zero, Source bias −4, Mark bias −4, Direct
    bias −6, Transition bias 1 inside tanh(5·(b + Wx)), angle bias linear over heads in
    [−2, 2] (the same spread for every orientation).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mode: str = "P",
        qk_dim: int | None = None,
        method: str = "parallel",
        chunk_size: int = 16,
        *,
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        qk_dim, self.qk_head_dim, self.v_head_dim = head_dims(dim, num_heads, qk_dim)
        self.dim = dim
        self.num_heads = num_heads
        self.mode = mode
        self.method = method
        self.chunk_size = chunk_size
        self._check_method()

        H, O = num_heads, len(ORIENTATION_FLIPS)
        self.q_proj = nn.Linear(dim, qk_dim, bias=bias)
        self.k_proj = nn.Linear(dim, qk_dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.source_gate = nn.Linear(dim, O * H)
        self.mark_gate = nn.Linear(dim, O * H)
        self.direct_gate = nn.Linear(dim, O * H)
        self.transition_gate = nn.Linear(dim, O * H * NUM_TRANSITION_LOGITS[mode])
        self.norm = MultiHeadRMSNorm(num_heads, self.v_head_dim, eps=eps)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_gate_parameters()

    def reset_gate_parameters(self) -> None:
        """Gate weights zero, biases as in paper Table 4."""
        H, O = self.num_heads, len(ORIENTATION_FLIPS)
        for lin in (self.source_gate, self.mark_gate, self.direct_gate, self.transition_gate):
            nn.init.zeros_(lin.weight)
        nn.init.constant_(self.source_gate.bias, SOURCE_BIAS)
        nn.init.constant_(self.mark_gate.bias, MARK_BIAS)
        nn.init.constant_(self.direct_gate.bias, DIRECT_BIAS)
        bias = torch.full((O, H, NUM_TRANSITION_LOGITS[self.mode]), TRANSITION_BIAS)
        if self.mode == "P":  # logit 0 is the angle: spread over heads
            bias[:, :, 0] = torch.linspace(*ORIENTATION_BIAS_RANGE, H)
        with torch.no_grad():
            self.transition_gate.bias.copy_(bias.reshape(-1))

    def _check_method(self) -> None:
        if self.method not in GRID_METHODS:
            raise ValueError(f"method must be one of {list(GRID_METHODS)}, got {self.method!r}")

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B,X,Y,D] with D = {self.dim}, got {got}")
        if 0 in x.shape:
            raise ValueError(f"x must have positive B, X and Y, got shape {tuple(x.shape)}")

    def _transition(self, logits: torch.Tensor) -> torch.Tensor:
        """logits ``[..., n]`` → ``[..., 2, 2]`` for this layer's mode."""
        if self.mode == "P":
            return pmode_grid_transition(logits[..., 0], logits[..., 1], scale=TRANSITION_SCALE)
        if self.mode == "D":
            return dmode_grid_transition(logits, scale=TRANSITION_SCALE)
        return unconstrained_grid_transition(logits, scale=TRANSITION_SCALE)

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All gates of all orientations in the UNflipped node order.

        x ``[B,X,Y,D]`` → source, mark ``[O,B,H,X,Y,2]``, transition ``[O,B,H,X,Y,2,2]``,
        direct ``[O,B,H,X,Y]`` with O = 4 orientations (order of ``ORIENTATION_FLIPS``);
        float32 for bf16/fp16 inputs (see :func:`gate_logits`), else x's dtype.
        """
        B, X, Y, _ = x.shape
        H, O = self.num_heads, len(ORIENTATION_FLIPS)

        def per_head(t: torch.Tensor) -> torch.Tensor:  # [B,X,Y,O*H*r] -> [O,B,H,X,Y,r]
            return gate_logits(t).reshape(B, X, Y, O, H, -1).permute(3, 0, 4, 1, 2, 5)

        source = torch.sigmoid(per_head(self.source_gate(x))).expand(-1, -1, -1, -1, -1, 2)
        mark = torch.sigmoid(per_head(self.mark_gate(x))).expand(-1, -1, -1, -1, -1, 2)
        direct = torch.sigmoid(per_head(self.direct_gate(x)))[..., 0]
        transition = self._transition(per_head(self.transition_gate(x)))
        return {"source": source, "transition": transition, "mark": mark, "direct": direct}

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k ``[B,H,X,Y,K]``, v ``[B,H,X,Y,V]``."""
        B, X, Y, _ = x.shape
        H = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, X, Y, H, -1).permute(0, 3, 1, 2, 4)

        q = heads(self.q_proj(x))
        k = heads(self.k_proj(x)) * self.qk_head_dim**-0.5
        v = heads(self.v_proj(x))
        return q, k, v

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """The summed pLSTM output of the four orientations before norm and projection.

        x ``[B,X,Y,D]`` → ``[B,H,X,Y,V]``. The four orientations run as one batch of 4·B
        grids (one op call), each flipped into its DAG cover and flipped back afterwards.
        """
        self._check_method()
        self._check_input(x)
        B, X, Y, _ = x.shape
        q, k, v = self._qkv(x)
        g = self.gates(x)
        source, transition, mark, direct = (
            _orient(g[name], per_orientation=True)
            for name in ("source", "transition", "mark", "direct")
        )
        if self.method == "fused":
            G = grid_gating_matrix(source, transition, mark, direct)  # [O·B,H,N,N], flipped
            G = G.reshape(len(ORIENTATION_FLIPS), B, self.num_heads, X, Y, X, Y)
            gating = _unorient(G, (3, 4), (5, 6)).reshape(B, self.num_heads, X * Y, X * Y)
            dtype = gating.dtype
            N, K = X * Y, self.qk_head_dim
            h = gated_linear_attention(
                q.reshape(B, -1, N, K).to(dtype),
                k.reshape(B, -1, N, K).to(dtype),
                v.reshape(B, -1, N, self.v_head_dim).to(dtype),
                gating,
            )
            return h.reshape(B, -1, X, Y, self.v_head_dim).to(torch.promote_types(q.dtype, v.dtype))
        h = plstm_2d(
            _orient(q),
            _orient(k),
            _orient(v),
            source,
            transition,
            mark,
            direct,
            method=self.method,
            chunk_size=self.chunk_size,
        )
        return _unorient(h.reshape(len(ORIENTATION_FLIPS), *q.shape[:-1], -1), (3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B,X,Y,D]`` → ``[B,X,Y,D]``."""
        self._check_input(x)
        B, X, Y, _ = x.shape
        h = self.mix(x)  # [B,H,X,Y,V]
        h = self.norm(h.permute(0, 2, 3, 1, 4)).reshape(B, X, Y, self.dim)
        return self.out_proj(h.to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, "
            f"qk_head_dim={self.qk_head_dim}, method={self.method!r}, chunk_size={self.chunk_size}"
        )
