"""GIN as defined by Xu et al. 2019 ("How powerful are graph neural networks?"), the baseline
that :class:`models.graph.GIN` only approximates.

Layer k (k = 1..depth) on node features ``h^{k-1}`` ``[N,D_{k-1}]`` (``h^0`` = the raw node
features, ``D_0 = F``)::

    z_v   = (1 + ε_k) · h_v + Σ_{u ∈ nbr(v)} m_uv
    h^k_v = ReLU(BN(MLP_k(z_v))),   MLP_k = Linear → BN → ReLU → Linear   (two layers)

with sum aggregation over both directions of every edge (the graph is undirected; the DAG
orientation of the inputs is ignored). ``m_uv = h_u`` (plain GIN, as in the paper), or with
edge features the GINE message of Hu et al. 2020, ``m_uv = ReLU(h_u + Linear_k(e_uv))``.
``ε_k`` is a learnable scalar per layer (GIN-ε) or fixed at 0 (GIN-0, the variant Xu et al.
found to generalise at least as well).

Readout over ALL layers (the paper's eq. 4.2, jumping-knowledge concatenation): the node
features of every layer, the input included, are summed per graph and concatenated,
``[G, F + depth·D]``, then dropout and one Linear to the outputs. This equals the paper's
reference implementation, which sums one Linear per layer over the sum-pooled features.

BatchNorm follows the paper: predictions depend on the batch in training mode only; in
evaluation mode (running statistics) every graph's output is independent of its batch.
"""

from __future__ import annotations

import torch
from torch import nn

from models.graph import _check_graph_inputs, _GraphModel


def sum_pool(h: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Sum of node features per graph: h ``[N,D]``, batch ``[N]`` → ``[G,D]`` (0 for a graph
    without nodes). ``num_graphs`` defaults to ``batch.max() + 1`` (one host sync)."""
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return h.new_zeros(num_graphs, h.shape[1]).index_add(0, batch, h)


class _GINLayerMLP(nn.Sequential):
    """The paper's two-layer MLP with BatchNorm on the hidden layer, followed by the BatchNorm
    and ReLU that every GIN layer applies to its output: ``[N,dim_in]`` → ``[N,dim]``."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__(
            nn.Linear(dim_in, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(),
            nn.Linear(dim, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(),
        )


class GINXu(_GraphModel):
    """Graph Isomorphism Network of Xu et al. 2019 (see the module docstring for the layer).

    ``num_edge_features > 0`` switches the messages to the GINE form (one edge Linear per
    layer); 0 gives the plain GIN of the paper and ignores any ``edge_attr`` passed in.
    ``learn_eps``: learnable ε per layer (GIN-ε, initialised to 0) or ε = 0 (GIN-0).
    ``dropout`` acts on the concatenated readout, as in the paper.
    ``forward_features`` returns the readout ``[G, num_node_features + depth·dim]``.
    """

    def __init__(
        self,
        num_node_features: int,
        num_classes: int | None = None,
        task: str = "classification",
        dim: int = 64,
        depth: int = 4,
        num_edge_features: int = 0,
        learn_eps: bool = False,
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
                "learn_eps": learn_eps,
                "dropout": dropout,
            }
        )
        widths = [num_node_features] + [dim] * depth
        eps = torch.zeros(depth)
        if learn_eps:
            self.eps = nn.Parameter(eps)
        else:
            self.register_buffer("eps", eps, persistent=False)
        self.mlps = nn.ModuleList(_GINLayerMLP(widths[k], dim) for k in range(depth))
        self.edge_proj = (
            nn.ModuleList(nn.Linear(num_edge_features, widths[k]) for k in range(depth))
            if num_edge_features > 0
            else None
        )
        self.readout_dim = sum(widths)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.readout_dim, self.num_classes)
        )

    def forward_features(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int | None = None,
        edge_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[N,F]``, edge_index ``[2,E]``, batch ``[N]`` → ``[G, F + depth·dim]`` (sum-pooled
        node features of the input and of every layer, concatenated)."""
        _check_graph_inputs(
            x, edge_index, batch, edge_attr, self.num_node_features, self.num_edge_features
        )
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        src = torch.cat([edge_index[0], edge_index[1]])
        dst = torch.cat([edge_index[1], edge_index[0]])
        h = x
        pooled = [sum_pool(h, batch, num_graphs)]
        for k, mlp in enumerate(self.mlps):
            msg = h.index_select(0, src)
            if self.edge_proj is not None:
                e = self.edge_proj[k](edge_attr)
                msg = torch.relu(msg + torch.cat([e, e]))
            agg = torch.zeros_like(h).index_add_(0, dst, msg)
            h = mlp((1 + self.eps[k]) * h + agg)
            pooled.append(sum_pool(h, batch, num_graphs))
        return torch.cat(pooled, 1)
