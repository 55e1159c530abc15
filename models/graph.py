"""Graph-level networks on batches of DAGs: PLSTMGraph (paper 5.4, D.4) and the GIN baseline.

Both take a disjoint union of graphs — x ``[N,F]``, edge_index ``[2,E]``, batch ``[N]``
(graph id of every node), optional edge_attr ``[E,Fe]`` — as built by
:func:`models.molecule_features.batch_graphs`, and share the API
``forward_features(...) → [G,D]`` (mean-pooled), ``forward_head([G,D]) → [G,C]``,
``forward(...) = forward_head(forward_features(...))`` and a JSON-serialisable ``config``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.capabilities import ModelCapabilities
from plstm_core.layers.dag_layer import DAG_METHODS, DagLayerPlan, PLSTMDAGLayer
from plstm_core.ops.dag_structure import build_line_index

TASKS = ("classification", "regression")


def _resolve_task(task: str, num_classes: int | None) -> int:
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    if num_classes is None:
        return 3 if task == "classification" else 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _check_graph_inputs(
    x: torch.Tensor,
    edge_index: torch.Tensor,
    batch: torch.Tensor,
    edge_attr: torch.Tensor | None,
    num_node_features: int,
    num_edge_features: int,
) -> None:
    if x.dim() != 2 or x.shape[1] != num_node_features:
        raise ValueError(
            f"x must have shape [N,F] with F = {num_node_features}, got {tuple(x.shape)}"
        )
    if edge_index.dtype != torch.long or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(
            f"edge_index must be a long tensor of shape [2,E], got "
            f"{edge_index.dtype} {tuple(edge_index.shape)}"
        )
    if batch.dtype != torch.long or batch.shape != (x.shape[0],):
        raise ValueError(
            f"batch must be a long tensor of shape [N] = ({x.shape[0]},), got "
            f"{batch.dtype} {tuple(batch.shape)}"
        )
    if num_edge_features > 0:
        if edge_attr is None:
            raise ValueError(
                f"edge_attr is required: the model was built with {num_edge_features} edge features"
            )
        if edge_attr.shape != (edge_index.shape[1], num_edge_features):
            raise ValueError(
                f"edge_attr must have shape [E,Fe] = ({edge_index.shape[1]}, "
                f"{num_edge_features}), got {tuple(edge_attr.shape)}"
            )


def mean_pool(h: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Mean of node features per graph: h ``[N,D]``, batch ``[N]`` → ``[G,D]`` (0 for a graph
    without nodes). ``num_graphs`` defaults to ``batch.max() + 1`` (one host sync)."""
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    total = h.new_zeros(num_graphs, h.shape[1]).index_add(0, batch, h)
    count = torch.zeros(num_graphs, dtype=h.dtype, device=h.device)
    count = count.index_add(0, batch, torch.ones_like(batch, dtype=h.dtype))
    return total / count.clamp(min=1).unsqueeze(1)


class _MLP(nn.Sequential):
    def __init__(self, dim_in: int, hidden: int, dim_out: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim_out)
        )


class _EdgeToNodes(nn.Module):
    """Embeds edge features and adds each edge's embedding to both of its end nodes:
    edge_attr ``[E,Fe]`` → ``[N,D]`` (sum over incident edges)."""

    def __init__(self, num_edge_features: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(num_edge_features, dim)

    def forward(
        self, edge_attr: torch.Tensor, edge_index: torch.Tensor, num_nodes: int
    ) -> torch.Tensor:
        e = self.proj(edge_attr)
        out = e.new_zeros(num_nodes, e.shape[1])
        return out.index_add(0, edge_index[0], e).index_add(0, edge_index[1], e)


class _PLSTMGraphBlock(nn.Module):
    """Pre-norm residual block: x + pLSTM-DAG(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mode: str, method: str, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=1e-5)
        self.mixer = PLSTMDAGLayer(dim, num_heads, mode=mode, method=method)
        self.norm2 = nn.RMSNorm(dim, eps=1e-5)
        self.mlp = _MLP(dim, 4 * dim, dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, plan: DagLayerPlan
    ) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x), edge_index, plan=plan))
        return x + self.drop(self.mlp(self.norm2(x)))


class _GraphModel(nn.Module):
    """What PLSTMGraph and GIN share: argument checks, ``config``, head and ``forward``.

    Subclasses set ``self.head`` and implement ``forward_features``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        num_classes = _resolve_task(config["task"], config["num_classes"])
        if config["num_node_features"] < 1:
            raise ValueError(
                f"num_node_features must be positive, got {config['num_node_features']}"
            )
        if config["num_edge_features"] < 0:
            raise ValueError(f"num_edge_features must be >= 0, got {config['num_edge_features']}")
        if config["depth"] < 1:
            raise ValueError(f"depth must be positive, got {config['depth']}")
        self._config = {**config, "num_classes": num_classes}
        self.num_node_features = config["num_node_features"]
        self.num_edge_features = config["num_edge_features"]
        self.num_classes = num_classes
        self.task = config["task"]

    @property
    def config(self) -> dict[str, Any]:
        """Every constructor argument (JSON-serialisable): ``type(self)(**config)`` rebuilds."""
        return dict(self._config)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled ``[G,D]`` → ``[G,num_classes]``."""
        return self.head(features)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int | None = None,
        edge_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[N,F]``, edge_index ``[2,E]``, batch ``[N]`` → ``[G,num_classes]``."""
        return self.forward_head(self.forward_features(x, edge_index, batch, num_graphs, edge_attr))


class PLSTMGraph(_GraphModel):
    """pLSTM on molecular / TU graphs given as DAGs (paper 5.4, D.4).

    node encoder (MLP) → ``depth`` pre-norm residual blocks (pLSTM-DAG layer + MLP ratio 4) →
    RMSNorm → mean pooling per graph → MLP readout. Modes and directions alternate: even
    blocks run D-mode on the DAG as given, odd blocks P-mode on the reversed DAG
    (``edge_index.flip(0)``), so with depth ≥ 2 information flows both ways along the
    canonical atom order. D comes first on purpose: in the canonical molecule DAGs (edges from
    lower to higher RDKit rank) the forward direction mostly merges paths (on the solubility
    train set only 5% of line edges leave an edge with more than one continuation) while the
    reversed direction mostly splits them (47%). P-mode's learned split over the
    continuations of an edge (its angle gate) only acts where paths split, and D-mode's
    pruning to a multitree only acts where they merge, so each mode runs in the direction
    where it does something.

    Edge features (``num_edge_features > 0``): the pLSTM-DAG layer computes its gates from node
    features only, so each edge's feature vector is embedded (Linear) and added to both of its
    end nodes' encodings before the first block; the gates of every edge then see its bond.

    ``num_classes`` defaults to 3 for classification and 1 for regression; the output is
    ``[G, num_classes]`` (logits or regression values).
    ``method``: ``"parallel"`` or ``"recurrent"`` for every pLSTM layer (see :meth:`set_method`).
    """

    capabilities = ModelCapabilities("graph", ("parallel", "recurrent"), "plstm_graph", onnx=True)

    def __init__(
        self,
        num_node_features: int,
        num_classes: int | None = None,
        task: str = "classification",
        dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        num_edge_features: int = 0,
        method: str = "parallel",
        dropout: float = 0.0,
    ) -> None:
        if method not in DAG_METHODS:
            raise ValueError(f"method must be one of {list(DAG_METHODS)}, got {method!r}")
        super().__init__(
            {
                "num_node_features": num_node_features,
                "num_classes": num_classes,
                "task": task,
                "dim": dim,
                "depth": depth,
                "num_heads": num_heads,
                "num_edge_features": num_edge_features,
                "method": method,
                "dropout": dropout,
            }
        )
        num_classes = self.num_classes
        self.node_encoder = _MLP(num_node_features, dim, dim)
        self.edge_encoder = _EdgeToNodes(num_edge_features, dim) if num_edge_features > 0 else None
        self.blocks = nn.ModuleList(
            _PLSTMGraphBlock(dim, num_heads, "D" if i % 2 == 0 else "P", method, dropout)
            for i in range(depth)
        )
        self.norm = nn.RMSNorm(dim, eps=1e-5)
        self.head = _MLP(dim, dim, num_classes, dropout)

    @property
    def config(self) -> dict[str, Any]:
        """Every constructor argument (JSON-serialisable): ``PLSTMGraph(**config)`` rebuilds."""
        return {**self._config, "method": self.method}

    @property
    def method(self) -> str:
        return self.blocks[0].mixer.method

    def set_method(self, method: str) -> None:
        """Switch every pLSTM layer to ``"parallel"`` or ``"recurrent"`` (same weights)."""
        if method not in DAG_METHODS:
            raise ValueError(f"method must be one of {list(DAG_METHODS)}, got {method!r}")
        for block in self.blocks:
            block.mixer.method = method

    def forward_features(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int | None = None,
        edge_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[N,F]``, edge_index ``[2,E]`` (a DAG), batch ``[N]`` → pooled ``[G,D]``."""
        _check_graph_inputs(
            x, edge_index, batch, edge_attr, self.num_node_features, self.num_edge_features
        )
        N = x.shape[0]
        h = self.node_encoder(x)
        if self.edge_encoder is not None:
            h = h + self.edge_encoder(edge_attr, edge_index, N)
        # blocks alternate (mode, direction); each pair's DAG work is done once for all blocks.
        # Reversing every edge reverses every line edge: (e', e) meets at target(e') =
        # source(e), so in the reversed DAG (e, e') does.
        directions = (edge_index, edge_index.flip(0))
        line_index = build_line_index(edge_index, num_nodes=N)
        lines = (line_index, line_index.flip(0))
        plans = [
            block.mixer.prepare(directions[i], N, lines[i])
            for i, block in enumerate(self.blocks[:2])
        ]
        for i, block in enumerate(self.blocks):
            h = block(h, directions[i % 2], plans[i % 2])
        return mean_pool(self.norm(h), batch, num_graphs)


class GIN(_GraphModel):
    """Graph Isomorphism Network baseline (Xu et al. 2019), plain torch.

    Linear node encoder, then ``depth`` layers
    ``h ← ReLU(LayerNorm(MLP((1 + ε)·h + Σ_{j ∈ nbr(i)} m_j)))`` with a learnable ε per layer
    (initialised to 0), sum aggregation via ``index_add_`` over both directions of every edge
    (GIN is undirected; the DAG orientation is ignored), mean pooling, MLP readout. LayerNorm
    replaces the usual BatchNorm so that predictions do not depend on the batch.
    Messages: ``m_j = h_j``, or with edge features (``num_edge_features > 0``) the GINE form
    ``m_j = ReLU(h_j + Linear(edge_attr))`` with one edge Linear per layer.
    """

    capabilities = ModelCapabilities("graph", ("parallel",), "gin", onnx=False)

    def __init__(
        self,
        num_node_features: int,
        num_classes: int | None = None,
        task: str = "classification",
        dim: int = 128,
        depth: int = 4,
        num_edge_features: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            {
                "num_node_features": num_node_features,
                "num_classes": num_classes,
                "task": task,
                "dim": dim,
                "depth": depth,
                "num_edge_features": num_edge_features,
                "dropout": dropout,
            }
        )
        num_classes = self.num_classes
        self.encoder = nn.Linear(num_node_features, dim)
        self.eps = nn.Parameter(torch.zeros(depth))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)) for _ in range(depth)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.edge_proj = (
            nn.ModuleList(nn.Linear(num_edge_features, dim) for _ in range(depth))
            if num_edge_features > 0
            else None
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, num_classes)
        )

    def forward_features(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int | None = None,
        edge_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[N,F]``, edge_index ``[2,E]``, batch ``[N]`` → pooled ``[G,D]``."""
        _check_graph_inputs(
            x, edge_index, batch, edge_attr, self.num_node_features, self.num_edge_features
        )
        src = torch.cat([edge_index[0], edge_index[1]])
        dst = torch.cat([edge_index[1], edge_index[0]])
        h = self.encoder(x)
        for i, (mlp, norm) in enumerate(zip(self.mlps, self.norms, strict=True)):
            msg = h.index_select(0, src)
            if self.edge_proj is not None:
                e = self.edge_proj[i](edge_attr)
                msg = torch.relu(msg + torch.cat([e, e]))
            agg = torch.zeros_like(h).index_add_(0, dst, msg)
            h = self.drop(torch.relu(norm(mlp((1 + self.eps[i]) * h + agg))))
        return mean_pool(h, batch, num_graphs)
