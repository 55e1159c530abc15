"""PLSTMGraph as an ONNX network: float work in the graph, structure work outside it.

A PLSTMGraph forward does two kinds of work. The index work depends only on the graph
structure of the batch: line graphs, the D-mode pruning of a line graph to a multitree, the
weakly connected components and the padding positions of the parallel DAG op
(:func:`plstm_core.ops.dag.prepare_dag`), including a host-side loop over repeated squarings
that checks acyclicity. It is data-dependent control flow that ONNX expresses badly, and it is
cheap, so :func:`graph_feeds` does it in torch per request batch and hands the results to the
network as int64 tensors. :class:`PLSTMGraphOnnx` is the float work — encoders, every block
(with the layers' own gate code and the op's own parallel form, :func:`plstm_dag` with a
prepared plan), pooling and head — and is what gets exported, with every size dynamic.

Inputs (names are :data:`GRAPH_INPUTS`; N nodes, E edges, G weakly connected components with
at most Nmax nodes and Emax edges, L_d line edges in direction d):

- ``x [N,F]`` float32, ``edge_attr [E,Fe]`` float32 (an input only when the model uses edge
  features), ``edge_index [2,E]``, ``batch [N]`` (graph id of every node) — as
  :func:`models.molecule_features.batch_graphs` builds them;
- ``graph_ids [num_graphs]``, ``component_ids [G]``, ``node_pad [Nmax]``, ``edge_pad [Emax]``:
  ``arange``s whose lengths carry the pooled output size and the padding sizes of the op;
- ``node_slot [N]``: padded position of every node (the same in both directions);
- per direction d (0: the DAG as given, used by the D-mode blocks 0, 2, ...; 1: the reversed
  DAG, used by the P-mode blocks 1, 3, ...): ``line_index_d [2,L_d]`` (already pruned for
  D-mode), ``line_slot_d [L_d]``, ``source_slot_d [E]``, ``mark_slot_d [E]``.

Output ``outputs [num_graphs, C]``. Inputs a model does not read (``edge_attr`` without edge
features, direction 1 with depth 1) are left out of the exported graph; feed only the names
the session lists.

No size may be zero: ONNX ``Reshape`` reads a 0 in a target shape as "keep this axis", so a
batch without edges or line edges (e.g. single atoms, ethane) would not run. :func:`graph_feeds`
therefore appends :data:`PAD_GRAPH_NODES` nodes forming a chain (two edges, one line edge in
either direction, zero features) as one extra graph: every size is then at least one, the real
graphs' outputs do not change (components are independent, padding is exact), and the extra
graph's output is the last row, which the caller drops
(:func:`models.onnx.runtime.run_graph_session`).

The op's number of squarings J (the line-graph transfer Π_{j<J}(I + A^(2^j))) is a loop count,
fixed at export: J = :func:`squarings_for` (max_nodes), enough for any component of up to
``max_nodes`` nodes. Extra squarings are exact: once 2^j exceeds the longest path, A^(2^j) is
exactly zero (every product has a structural zero factor), so they add exact zeros.
:func:`graph_feeds` refuses batches that would need more.
"""

from __future__ import annotations

import torch
from torch import nn

from models.graph import PLSTMGraph, mean_pool
from plstm_core.layers.dag_layer import DagLayerPlan
from plstm_core.ops.dag import DagPlan, _ParallelIndex, prepare_dag
from plstm_core.ops.dag_structure import build_line_index

DIRECTION_INPUTS = ("line_index", "line_slot", "source_slot", "mark_slot")
GRAPH_INPUTS = (
    "x",
    "edge_attr",
    "edge_index",
    "batch",
    "graph_ids",
    "component_ids",
    "node_pad",
    "edge_pad",
    "node_slot",
    *(f"{name}_{d}" for d in (0, 1) for name in DIRECTION_INPUTS),
)
"""Input names of the exported graph model, in the order of :meth:`PLSTMGraphOnnx.forward`."""
GRAPH_OUTPUT = "outputs"
PAD_GRAPH_NODES = 3
"""Nodes of the chain graph :func:`graph_feeds` appends (module docstring)."""


def squarings_for(max_nodes: int) -> int:
    """Squarings J that cover every DAG component of up to ``max_nodes`` nodes: its longest
    path has at most max_nodes − 1 edges, and 2^J ≥ max_nodes exceeds it."""
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive int, got {max_nodes!r}")
    return max(1, (max_nodes - 1).bit_length())


def graph_dynamic_axes() -> dict[str, dict[int, str]]:
    """``dynamic_axes`` for ``torch.onnx.export``: every size of :data:`GRAPH_INPUTS`."""
    axes: dict[str, dict[int, str]] = {
        "x": {0: "N"},
        "edge_attr": {0: "E"},
        "edge_index": {1: "E"},
        "batch": {0: "N"},
        "graph_ids": {0: "num_graphs"},
        "component_ids": {0: "G"},
        "node_pad": {0: "Nmax"},
        "edge_pad": {0: "Emax"},
        "node_slot": {0: "N"},
        GRAPH_OUTPUT: {0: "num_graphs"},
    }
    for d in (0, 1):
        axes[f"line_index_{d}"] = {1: f"L{d}"}
        axes[f"line_slot_{d}"] = {0: f"L{d}"}
        axes[f"source_slot_{d}"] = {0: "E"}
        axes[f"mark_slot_{d}"] = {0: "E"}
    return axes


class PLSTMGraphOnnx(nn.Module):
    """The float part of ``model``'s forward, on prepared index tensors (module docstring).

    Shares ``model``'s parameters; ``model`` must be in eval mode with every pLSTM layer on
    the ``"parallel"`` method. Gives ``model(...)``'s outputs up to float rounding.
    """

    def __init__(self, model: PLSTMGraph, squarings: int) -> None:
        super().__init__()
        if model.method != "parallel":
            raise ValueError(f"the model must use the parallel method, got {model.method!r}")
        self.model = model
        self.squarings = squarings

    def _plan(
        self,
        d: int,
        edge_index: torch.Tensor,
        node_slot: torch.Tensor,
        sizes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        line_index: torch.Tensor,
        line_slot: torch.Tensor,
        source_slot: torch.Tensor,
        mark_slot: torch.Tensor,
    ) -> DagLayerPlan:
        """The plan of direction ``d`` as the layers expect it, from the index inputs."""
        num_graphs, max_nodes, max_edges = (t.shape[0] for t in sizes)
        index = _ParallelIndex(
            num_graphs=num_graphs,
            max_nodes=max_nodes,
            max_edges=max_edges,
            num_squarings=self.squarings,
            node_slot=node_slot,
            line_slot=line_slot,
            source_slot=source_slot,
            mark_slot=mark_slot,
        )
        plan = DagPlan(
            method="parallel",
            num_nodes=node_slot.shape[0],
            num_edges=int(edge_index.shape[1]),
            num_line_edges=int(line_index.shape[1]),
            device=edge_index.device,
            edge_index=edge_index,
            line_index=line_index,
            index=index,
        )
        return DagLayerPlan(self.model.blocks[d].mixer.mode, plan)

    def forward(
        self,
        x: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        graph_ids: torch.Tensor,
        component_ids: torch.Tensor,
        node_pad: torch.Tensor,
        edge_pad: torch.Tensor,
        node_slot: torch.Tensor,
        line_index_0: torch.Tensor,
        line_slot_0: torch.Tensor,
        source_slot_0: torch.Tensor,
        mark_slot_0: torch.Tensor,
        line_index_1: torch.Tensor,
        line_slot_1: torch.Tensor,
        source_slot_1: torch.Tensor,
        mark_slot_1: torch.Tensor,
    ) -> torch.Tensor:
        """Inputs as in the module docstring → ``[num_graphs, C]``."""
        model = self.model
        h = model.node_encoder(x)
        if model.edge_encoder is not None:
            h = h + model.edge_encoder(edge_attr, edge_index, x.shape[0])
        directions = (edge_index, edge_index.flip(0))
        per_direction = (
            (line_index_0, line_slot_0, source_slot_0, mark_slot_0),
            (line_index_1, line_slot_1, source_slot_1, mark_slot_1),
        )
        sizes = (component_ids, node_pad, edge_pad)
        plans = [
            self._plan(d, directions[d], node_slot, sizes, *per_direction[d])
            for d in range(min(2, len(model.blocks)))
        ]
        for i, block in enumerate(model.blocks):
            h = block(h, directions[i % 2], plans[i % 2])
        pooled = mean_pool(model.norm(h), batch, graph_ids.shape[0])
        return model.forward_head(pooled)


def graph_feeds(
    model: PLSTMGraph,
    x: torch.Tensor,
    edge_index: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    edge_attr: torch.Tensor | None = None,
    *,
    squarings: int,
) -> dict[str, torch.Tensor]:
    """The inputs of an exported ``model`` for one batch (the arguments of ``model.forward``):
    every name of :data:`GRAPH_INPUTS`, CPU tensors (float32 features, int64 indices), for
    ``num_graphs`` + 1 graphs: the batch followed by the padding chain (module docstring).

    Validates the structure like the torch path (ValueError for out-of-range indices and
    cycles) and raises ValueError when a component would need more than ``squarings``
    squarings, i.e. is larger than the export supports.
    """
    N = int(x.shape[0])
    E = int(edge_index.shape[1])
    if edge_attr is None:
        edge_attr = torch.zeros(E, 0)
    pad = torch.arange(N, N + PAD_GRAPH_NODES - 1)
    edge_index = torch.cat([edge_index.detach().to("cpu"), torch.stack([pad, pad + 1])], 1)
    pad_x = torch.zeros(PAD_GRAPH_NODES, x.shape[1])
    pad_attr = torch.zeros(pad.numel(), edge_attr.shape[1])
    N += PAD_GRAPH_NODES
    feeds = {
        "x": torch.cat([x.detach().to("cpu", torch.float32), pad_x]),
        "edge_attr": torch.cat([edge_attr.detach().to("cpu", torch.float32), pad_attr]),
        "edge_index": edge_index,
        "batch": torch.cat([batch.detach().to("cpu"), torch.full((PAD_GRAPH_NODES,), num_graphs)]),
        "graph_ids": torch.arange(num_graphs + 1),
    }
    directions = (edge_index, edge_index.flip(0))
    for d in (0, 1):
        layer = model.blocks[min(d, len(model.blocks) - 1)].mixer
        line_index = layer.line_graph(directions[d], build_line_index(directions[d], N))
        plan = prepare_dag(directions[d], line_index, N, method="parallel")
        index = plan.index
        assert isinstance(index, _ParallelIndex)
        if index.num_squarings > squarings:
            raise ValueError(
                f"a graph of this batch needs {index.num_squarings} squarings in the parallel "
                f"DAG op, the ONNX export does {squarings} (components up to "
                f"{2**squarings} nodes); use path=parallel or re-export with a larger limit"
            )
        feeds.update(
            {
                f"line_index_{d}": plan.line_index,
                f"line_slot_{d}": index.line_slot,
                f"source_slot_{d}": index.source_slot,
                f"mark_slot_{d}": index.mark_slot,
            }
        )
        if d == 0:
            feeds["node_slot"] = index.node_slot
            feeds["component_ids"] = torch.arange(index.num_graphs)
            feeds["node_pad"] = torch.arange(index.max_nodes)
            feeds["edge_pad"] = torch.arange(index.max_edges)
    return feeds
