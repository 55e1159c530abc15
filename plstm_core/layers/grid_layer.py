"""The pLSTM layer on a 2D grid of tokens: four orientations, P- or D-mode gates (paper B.1)."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from plstm_core.layers.heads import head_dims
from plstm_core.layers.norm import MultiHeadRMSNorm
from plstm_core.ops.contraction import gated_linear_attention
from plstm_core.ops.grid import grid_gating_matrix
from plstm_core.ops.grid_mix import (
    NUM_TRANSITION_LOGITS,
    ORIENTATION_FLIPS,
    GridMixLayout,
    grid_mix_reference,
    orient,
    unorient,
    unpack_gates,
    unpack_qkv,
)
from plstm_core.ops.grid_mix_cpu import grid_mix_cpu, grid_mix_cpu_supported
from plstm_core.ops.grid_mix_triton import grid_mix_fused, grid_mix_supported

GRID_METHODS = ("parallel", "recurrent", "chunkwise", "fused")
MODES = tuple(NUM_TRANSITION_LOGITS)
__all__ = ["GRID_METHODS", "MODES", "ORIENTATION_FLIPS", "PLSTMGridLayer"]

# Paper Table 4 (DESIGN.md section 4).
SOURCE_BIAS = -4.0
MARK_BIAS = -4.0
DIRECT_BIAS = -6.0
TRANSITION_BIAS = 1.0
ORIENTATION_BIAS_RANGE = (-2.0, 2.0)

_PROJECTION_NAMES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "source_gate",
    "mark_gate",
    "direct_gate",
    "transition_gate",
)
"""The projections of :meth:`PLSTMGridLayer.project`, in the column order of GridMixLayout."""

_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per layer: (parameter key, parameter references, (weight, bias)) of the last inference-mode
:meth:`PLSTMGridLayer.project` (outside the module, so that ``state_dict``, ``deepcopy`` and
pickling never see it)."""


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

    All projections run as ONE matrix product z = x·Wᵀ + b (q, k, v and every gate logit of
    every orientation, :meth:`project`; layout :class:`plstm_core.ops.grid_mix.GridMixLayout`);
    the parameters stay separate ``nn.Linear`` modules. Each orientation (flip none, x, y,
    both) is ``plstm_2d`` on its DAG cover with its own gates; the outputs are summed (so the
    node's own term is Σ_o Direct_o · (q·k) v, an effective Direct gate in (0, 4)).
    ``method`` (an attribute; may be changed after construction):

    - ``"parallel"``: on a CUDA device with Triton (grids up to 1024 padded nodes), ONE fused
      kernel per direction of autograd: reads z in place, computes the gates inside, indexes the
      orientations and sums them (:mod:`plstm_core.ops.grid_mix_triton`; O(B·H·N_pad²·(K+V))
      time, no B·H·X·Y·O tensor in memory); otherwise four ``plstm_2d`` calls on flipped copies
      (:func:`plstm_core.ops.grid_mix.grid_mix_reference`).
    - ``"recurrent"`` / ``"chunkwise"``: four ``plstm_2d`` calls with that method (``chunk_size``
      for chunkwise). Costs as in ``plstm_2d`` times four.
    - ``"fused"``: the four gating matrices (mapped back to the unflipped node order) are summed
      and ONE :func:`gated_linear_attention` contraction runs (paper A.7 multi-directional form);
      O(B·H·N²·(K+V)) time for the contraction plus four gating constructions, O(B·H·N²) memory.

    On the CPU (:mod:`plstm_core.ops.grid_mix_cpu`) "parallel" and "fused" build the summed
    gating matrix directly (:mod:`plstm_core.ops.grid_mix_summed`, quadratic in X·Y; without
    autograd by a C kernel, :mod:`plstm_core.ops.grid_gating_native`); "recurrent" and
    "chunkwise" run, without autograd, the recurrent form in a C kernel
    (:mod:`plstm_core.ops.grid_recurrent_native`), with autograd the chunkwise form over 4×4
    tiles of all four orientations in one wavefront (:mod:`plstm_core.ops.grid_mix_tiles`);
    both linear in X·Y (small grids take the summed form, faster there). The results are the
    same.
    ``PLSTM_FUSED_LAYER=0`` restores the forms above on every device.

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

    @property
    def layout(self) -> GridMixLayout:
        """Where q, k, v and the gate logits sit in the columns of :meth:`project`."""
        return GridMixLayout(self.num_heads, self.qk_head_dim, self.v_head_dim, self.mode)

    def _projections(self) -> tuple[nn.Linear, ...]:
        return tuple(getattr(self, name) for name in _PROJECTION_NAMES)

    def _packed_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights and biases of :meth:`_projections` concatenated, ``[F,D]`` and ``[F]``."""
        lins = self._projections()
        weight = torch.cat([lin.weight for lin in lins])
        bias = torch.cat(
            [
                lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                for lin in lins
            ]
        )
        return weight, bias

    def _packed_projection_cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_packed_projection`, kept between calls under ``torch.inference_mode`` only.

        Concatenating seven matrices on every call made :meth:`project` about 1.6× slower at
        12×12 tokens; the kept copy costs one more set of projection weights per layer. It is
        served again only while every parameter still has the same storage
        (``data_ptr``, held alive by the entry so that it cannot be reused) and version counter
        (bumped by every in-place write: ``load_state_dict``, ``copy_``, optimiser steps). With
        autograd, or under ``no_grad`` alone, the concatenation runs anew on every call (and
        drops the entry). Writes through ``p.data`` bypass the version counter: after such a
        write, call the layer once outside inference mode."""
        # straight from the parameter dicts (Module.__getattr__ costs ~0.4 µs a lookup); a
        # Linear whose weight is computed (torch.nn.utils.parametrize) is not cached
        params = []
        for name in _PROJECTION_NAMES:
            registered = self._modules[name]._parameters
            weight = registered.get("weight")
            if weight is None or weight.is_inference():  # no version counter to watch
                return self._packed_projection()
            params.append(weight)
            bias = registered.get("bias")
            if bias is not None:
                if bias.is_inference():
                    return self._packed_projection()
                params.append(bias)
        key = tuple((p.data_ptr(), p._version) for p in params)
        entry = _PACKED.get(self)
        if entry is None or entry[0] != key:
            # `p.detach()` keeps each storage alive, so a data_ptr in the key is never reused
            entry = (key, [p.detach() for p in params], self._packed_projection())
            _PACKED[self] = entry
        return entry[2]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B,X,Y,D]`` → z ``[B,X,Y,F]``: every projection of the layer as one matrix
        product (columns in the order of :class:`GridMixLayout`)."""
        if torch.is_inference_mode_enabled() and not torch.is_grad_enabled():
            weight, bias = self._packed_projection_cached()
        else:
            _PACKED.pop(self, None)
            weight, bias = self._packed_projection()
        return nn.functional.linear(x, weight, bias)

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All gates of all orientations in the UNflipped node order.

        x ``[B,X,Y,D]`` → source, mark ``[O,B,H,X,Y,2]``, transition ``[O,B,H,X,Y,2,2]``,
        direct ``[O,B,H,X,Y]`` with O = 4 orientations (order of ``ORIENTATION_FLIPS``);
        float32 for bf16/fp16 inputs, else x's dtype.
        """
        return unpack_gates(self.project(x), self.layout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k ``[B,H,X,Y,K]`` (k scaled by K^-1/2), v ``[B,H,X,Y,V]``."""
        return unpack_qkv(self.project(x), self.layout)

    def _summed_gating_mix(self, z: torch.Tensor) -> torch.Tensor:
        """Method "fused": z ``[B,X,Y,F]`` → ``[B,X,Y,H,V]`` through one contraction with the
        sum of the four orientations' gating matrices."""
        B, X, Y, _ = z.shape
        layout = self.layout
        q, k, v = unpack_qkv(z, layout)
        g = unpack_gates(z, layout)
        source, transition, mark, direct = (
            orient(g[name], per_orientation=True)
            for name in ("source", "transition", "mark", "direct")
        )
        G = grid_gating_matrix(source, transition, mark, direct)  # [O·B,H,N,N], flipped
        G = G.reshape(len(ORIENTATION_FLIPS), B, self.num_heads, X, Y, X, Y)
        gating = unorient(G, (3, 4), (5, 6)).reshape(B, self.num_heads, X * Y, X * Y)
        dtype = gating.dtype
        N, K = X * Y, self.qk_head_dim
        h = gated_linear_attention(
            q.reshape(B, -1, N, K).to(dtype),
            k.reshape(B, -1, N, K).to(dtype),
            v.reshape(B, -1, N, self.v_head_dim).to(dtype),
            gating,
        )
        h = h.reshape(B, -1, X, Y, self.v_head_dim).to(torch.promote_types(q.dtype, v.dtype))
        return h.permute(0, 2, 3, 1, 4)

    def _mix_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B,X,Y,D]`` → the summed four-orientation pLSTM output ``[B,X,Y,H,V]``."""
        self._check_method()
        self._check_input(x)
        z = self.project(x)
        if grid_mix_cpu_supported(z):
            return grid_mix_cpu(z, self.layout, self.method)
        if self.method == "fused":
            return self._summed_gating_mix(z)
        if self.method == "parallel" and grid_mix_supported(z, self.layout):
            return grid_mix_fused(z, self.layout)
        return grid_mix_reference(z, self.layout, method=self.method, chunk_size=self.chunk_size)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """The summed pLSTM output of the four orientations before norm and projection:
        x ``[B,X,Y,D]`` → ``[B,H,X,Y,V]``."""
        return self._mix_tokens(x).permute(0, 3, 1, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B,X,Y,D]`` → ``[B,X,Y,D]``."""
        self._check_input(x)
        B, X, Y, _ = x.shape
        h = self.norm(self._mix_tokens(x)).reshape(B, X, Y, self.dim)
        return self.out_proj(h.to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, "
            f"qk_head_dim={self.qk_head_dim}, method={self.method!r}, chunk_size={self.chunk_size}"
        )
