"""The pLSTM layer on a batch of DAGs (disjoint union), P- or D-mode gates (paper 4.2, 5.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plstm_core.gates import (
    TRANSITION_SCALE,
    dmode_dag_keep,
    gate_logits,
    pmode_dag_transition,
)
from plstm_core.layers.grid_layer import (
    DIRECT_BIAS,
    MARK_BIAS,
    SOURCE_BIAS,
    TRANSITION_BIAS,
)
from plstm_core.layers.heads import head_dims
from plstm_core.layers.norm import MultiHeadRMSNorm
from plstm_core.ops.dag import DagPlan, plstm_dag, prepare_dag
from plstm_core.ops.dag_native import (
    NativeDagPlan,
    native_dag_available,
    plstm_dag_native,
    prepare_dag_native,
)
from plstm_core.ops.dag_structure import build_line_index

DAG_METHODS = ("parallel", "recurrent")
DAG_MODES = ("P", "D", "U")


@dataclass(frozen=True)
class DagLayerPlan:
    """A DAG batch prepared once for every layer of one mode and method (see
    :meth:`PLSTMDAGLayer.prepare`): the op's index plan on the layer's line graph (for the
    C kernel, :class:`NativeDagPlan`, when it was prepared without autograd on the CPU)."""

    mode: str
    plan: DagPlan | NativeDagPlan


class PLSTMDAGLayer(nn.Module):
    """pLSTM over a batch of DAGs, followed by multi-head RMSNorm and an output projection.

    forward(x ``[N,D]``, edge_index ``[2,E]``, line_index ``[2,L]`` or None) → ``[N,D]``.
    ``line_index`` defaults to all line edges, :func:`build_line_index`. Per node q, k ``[H,K]``
    (k scaled by K^-1/2), v ``[H,V]``, V = dim / num_heads, K = qk_dim / num_heads (qk_dim = dim
    by default). Gates per head (sigmoid for Source / Mark / Direct):

    - Source of edge e from its source node's features, Mark of edge e from its target node's,
      Direct from the node's own features.
    - Transition of line edge l = (e' → e) through the shared node n = target(e') = source(e):
      ``mode="P"``: T[l] = tanh(5·decay(x_n)) · softmax over the line edges leaving e' of
      angle(x_target(e)) — the decay comes from the shared node, the split between the
      outgoing edges from where each outgoing edge leads (a bias would cancel in the softmax,
      so the angle linear has none); Σ_e |T[e', e]| = |γ| ≤ 1 (paper eq. 9).
      ``mode="D"``: the line graph is pruned to a multitree (each outgoing edge continues from
      the incoming edge whose source node has the smallest index,
      :func:`plstm_core.gates.dmode_dag_keep`) and the kept entries are tanh(5·t(x_n)).
      ``mode="U"``: every line edge tanh(5·t(x_n)), unconstrained (stability counter-example).

    ``method`` (attribute, may be changed): ``"parallel"`` or ``"recurrent"`` of
    :func:`plstm_core.ops.dag.plstm_dag` (costs documented there). On the CPU without autograd
    either method runs the recurrent form in a C kernel instead
    (:mod:`plstm_core.ops.dag_native`; same result, a few operations per layer instead of
    hundreds).
    Initialisation (paper Table 4): gate weights zero, Source bias −4, Mark bias −4, Direct
    bias −6, Transition bias 1 inside tanh(5·(b + Wx)).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mode: str = "P",
        method: str = "parallel",
        qk_dim: int | None = None,
        *,
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if mode not in DAG_MODES:
            raise ValueError(f"mode must be one of {list(DAG_MODES)}, got {mode!r}")
        qk_dim, self.qk_head_dim, self.v_head_dim = head_dims(dim, num_heads, qk_dim)
        self.dim = dim
        self.num_heads = num_heads
        self.mode = mode
        self.method = method
        self._check_method()

        H = num_heads
        self.q_proj = nn.Linear(dim, qk_dim, bias=bias)
        self.k_proj = nn.Linear(dim, qk_dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.source_gate = nn.Linear(dim, H)
        self.mark_gate = nn.Linear(dim, H)
        self.direct_gate = nn.Linear(dim, H)
        self.transition_gate = nn.Linear(dim, H)
        self.orientation_gate = nn.Linear(dim, H, bias=False) if mode == "P" else None
        self.norm = MultiHeadRMSNorm(num_heads, self.v_head_dim, eps=eps)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_gate_parameters()

    def reset_gate_parameters(self) -> None:
        """Gate weights zero, biases as in paper Table 4."""
        gates = [self.source_gate, self.mark_gate, self.direct_gate, self.transition_gate]
        if self.orientation_gate is not None:
            gates.append(self.orientation_gate)
        for lin in gates:
            nn.init.zeros_(lin.weight)
        nn.init.constant_(self.source_gate.bias, SOURCE_BIAS)
        nn.init.constant_(self.mark_gate.bias, MARK_BIAS)
        nn.init.constant_(self.direct_gate.bias, DIRECT_BIAS)
        nn.init.constant_(self.transition_gate.bias, TRANSITION_BIAS)

    def _check_method(self) -> None:
        if self.method not in DAG_METHODS:
            raise ValueError(f"method must be one of {list(DAG_METHODS)}, got {self.method!r}")

    def _check_inputs(self, x: torch.Tensor, edge_index: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [N,D] with D = {self.dim}, got {got}")
        if (
            not isinstance(edge_index, torch.Tensor)
            or edge_index.dtype != torch.long
            or edge_index.dim() != 2
            or edge_index.shape[0] != 2
        ):
            got = (
                f"{edge_index.dtype} {tuple(edge_index.shape)}"
                if isinstance(edge_index, torch.Tensor)
                else type(edge_index).__name__
            )
            raise ValueError(f"edge_index must be a long tensor of shape [2,E], got {got}")

    def line_graph(self, edge_index: torch.Tensor, line_index: torch.Tensor) -> torch.Tensor:
        """The line edges this layer's mode uses: all of them, or in D-mode the multitree
        left by :func:`dmode_dag_keep` ``[2,L']``."""
        if self.mode == "D":
            return line_index[:, dmode_dag_keep(edge_index, line_index)]
        return line_index

    def prepare(
        self, edge_index: torch.Tensor, num_nodes: int, line_index: torch.Tensor | None = None
    ) -> DagLayerPlan:
        """Validate a DAG batch and do its index work once, for every layer with this mode and
        method (a model reuses it across its blocks and the backward pass)."""
        self._check_method()
        if line_index is None:
            line_index = build_line_index(edge_index, num_nodes=num_nodes)
        line_index = self.line_graph(edge_index, line_index)
        if native_dag_available(edge_index.device):
            return DagLayerPlan(self.mode, prepare_dag_native(edge_index, line_index, num_nodes))
        plan = prepare_dag(edge_index, line_index, num_nodes, method=self.method)
        return DagLayerPlan(self.mode, plan)

    def gates(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        line_index: torch.Tensor,
        *,
        pruned: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Gates for ``plstm_dag``: source, mark ``[E,H]``, direct ``[N,H]``, transition
        ``[L',H]`` and the line_index ``[2,L']`` they belong to (L' = L except in D-mode,
        where the pruned line edges are dropped; ``pruned=True``: line_index already is
        :meth:`line_graph`'s). float32 for bf16/fp16 x."""
        src, tgt = edge_index[0], edge_index[1]
        source = torch.sigmoid(gate_logits(self.source_gate(x)).index_select(0, src))
        mark = torch.sigmoid(gate_logits(self.mark_gate(x)).index_select(0, tgt))
        direct = torch.sigmoid(gate_logits(self.direct_gate(x)))
        if not pruned:
            line_index = self.line_graph(edge_index, line_index)
        e_out = line_index[1]
        shared = src.index_select(0, e_out)  # = target(e') = source(e)
        logit = gate_logits(self.transition_gate(x)).index_select(0, shared)
        if self.mode == "P":
            target = tgt.index_select(0, e_out)  # where each outgoing edge leads
            angle = gate_logits(self.orientation_gate(x)).index_select(0, target)
            transition = pmode_dag_transition(
                angle, logit, line_index, edge_index.shape[1], scale=TRANSITION_SCALE
            )
        else:
            transition = torch.tanh(TRANSITION_SCALE * logit)
        return {
            "source": source,
            "transition": transition,
            "mark": mark,
            "direct": direct,
            "line_index": line_index,
        }

    def mix(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        line_index: torch.Tensor | None = None,
        plan: DagLayerPlan | None = None,
    ) -> torch.Tensor:
        """The pLSTM output before norm and projection: x ``[N,D]`` → ``[N,H,V]``.

        ``plan`` (from :meth:`prepare` on this edge_index) skips the per-call index work;
        ``line_index`` is then taken from it."""
        self._check_method()
        self._check_inputs(x, edge_index)
        if plan is None:
            plan = self.prepare(edge_index, x.shape[0], line_index)
        elif plan.mode != self.mode:
            raise ValueError(f"plan was prepared for mode {plan.mode!r}, layer is {self.mode!r}")
        native = isinstance(plan.plan, NativeDagPlan)
        if native and not native_dag_available(x.device):  # e.g. prepared without autograd
            plan = self.prepare(edge_index, x.shape[0], plan.plan.line_index)
            native = isinstance(plan.plan, NativeDagPlan)
        N, H = x.shape[0], self.num_heads
        q = self.q_proj(x).reshape(N, H, self.qk_head_dim)
        k = self.k_proj(x).reshape(N, H, self.qk_head_dim) * self.qk_head_dim**-0.5
        v = self.v_proj(x).reshape(N, H, self.v_head_dim)
        g = self.gates(x, edge_index, plan.plan.line_index, pruned=True)
        if native:
            gates = (g["source"], g["transition"], g["mark"], g["direct"])
            return plstm_dag_native(q, k, v, *gates, plan.plan)
        return plstm_dag(
            q,
            k,
            v,
            g["source"],
            g["transition"],
            g["mark"],
            g["direct"],
            edge_index,
            g["line_index"],
            method=self.method,
            plan=plan.plan,
        )

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        line_index: torch.Tensor | None = None,
        plan: DagLayerPlan | None = None,
    ) -> torch.Tensor:
        """x ``[N,D]``, edge_index ``[2,E]``, line_index ``[2,L]`` (optional), plan (optional,
        from :meth:`prepare`) → ``[N,D]``."""
        h = self.mix(x, edge_index, line_index, plan)
        h = self.norm(h).reshape(x.shape[0], self.dim)
        return self.out_proj(h.to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, "
            f"qk_head_dim={self.qk_head_dim}, method={self.method!r}"
        )
