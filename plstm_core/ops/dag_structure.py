"""Structure helpers for pLSTM on DAGs, working on index tensors.

A batch of DAGs is one disjoint union: ``edge_index [2,E]`` (row 0 source node, row 1 target
node) over N nodes, and the line graph ``line_index [2,L]`` (row 0 incoming edge e', row 1
outgoing edge e, with target(e') == source(e)), see paper section 4.

Everything here is vectorised torch code on the device of the index tensors; the only Python
loops run over topological levels (or over label-propagation rounds for the components).
"""

from __future__ import annotations

import torch


def check_index(name: str, t: object, layout: str = "[2,E]") -> int:
    """Check that ``t`` is a long tensor of shape ``[2, M]``; returns M."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.long:
        raise ValueError(f"{name} must be a long (int64) tensor, got {t.dtype}")
    if t.dim() != 2 or t.shape[0] != 2:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)}")
    return int(t.shape[1])


def _check_range(name: str, t: torch.Tensor, upper: int, what: str) -> None:
    """Every entry of ``t`` must lie in ``[0, upper)`` (one host synchronisation)."""
    if t.numel() == 0:
        return
    low, high = torch.stack([t.min(), t.max()]).tolist()
    if low < 0 or high >= upper:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} holds {what} index {bad}, out of range for {upper} {what}s "
            f"(expected 0 <= index < {upper})"
        )


def _infer_num_nodes(edge_index: torch.Tensor, num_nodes: int | None) -> int:
    if num_nodes is not None:
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
            raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
        return num_nodes
    return int(edge_index.max()) + 1 if edge_index.numel() else 0


def build_line_index(edge_index: torch.Tensor, num_nodes: int | None = None) -> torch.Tensor:
    """All line-graph edges of a DAG: pairs (e', e) with target(e') == source(e).

    edge_index ``[2,E]`` (long). Returns line_index ``[2,L]`` (row 0 e', row 1 e), ordered by
    e, then by e'. Cost: O(E + L) time and memory, no Python loop.
    """
    E = check_index("edge_index", edge_index)
    N = _infer_num_nodes(edge_index, num_nodes)
    _check_range("edge_index", edge_index, N, "node")
    device = edge_index.device
    src, dst = edge_index[0], edge_index[1]
    # incoming edges grouped by their target node, each group in increasing edge id
    by_target = torch.sort(dst, stable=True).indices
    indeg = torch.bincount(dst, minlength=N)
    start = torch.cumsum(indeg, 0) - indeg
    count = indeg[src]  # for outgoing edge e: how many edges arrive at source(e)
    e_out = torch.repeat_interleave(torch.arange(E, device=device), count)
    first = torch.cumsum(count, 0) - count
    offset = torch.arange(e_out.numel(), device=device) - torch.repeat_interleave(first, count)
    e_in = by_target[start[src[e_out]] + offset]
    return torch.stack([e_in, e_out])


def topological_levels(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Level of every node: the length of the longest path from any root (roots have level 0).

    edge_index ``[2,E]``. Returns LongTensor ``[N]``. Raises ``ValueError`` when the graph
    contains a cycle. Frontier relaxation (Kahn layering): a node joins level l + 1 once the
    last of its in-edges has been removed; the Python loop runs over levels only.
    Cost: O(N + E) time and memory plus one host synchronisation per level.
    """
    device = edge_index.device
    src, dst = edge_index[0], edge_index[1]
    level = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
    if num_nodes == 0:
        return level
    remaining = torch.bincount(dst, minlength=num_nodes)  # in-edges not yet removed
    outdeg = torch.bincount(src, minlength=num_nodes)
    by_source = torch.sort(src, stable=True).indices
    start = torch.cumsum(outdeg, 0) - outdeg
    frontier = torch.nonzero(remaining == 0).flatten()
    depth = 0
    while frontier.numel() > 0:
        level[frontier] = depth
        count = outdeg[frontier]
        first = torch.cumsum(count, 0) - count
        offset = torch.arange(int(count.sum()), device=device) - torch.repeat_interleave(
            first, count
        )
        out_edges = by_source[torch.repeat_interleave(start[frontier], count) + offset]
        reached = dst[out_edges]
        # work proportional to the frontier's out-edges, not to N
        remaining.index_add_(0, reached, torch.full_like(reached, -1))
        reached = torch.unique(reached)
        frontier = reached[remaining[reached] == 0]
        depth += 1
    stuck = torch.nonzero(level < 0).flatten()
    if stuck.numel() > 0:
        raise ValueError(
            f"edge_index contains a cycle: {stuck.numel()} of {num_nodes} nodes lie on or "
            f"behind a cycle (e.g. node {int(stuck[0])}); pLSTM needs a DAG"
        )
    return level


def check_dag_indices(
    edge_index: torch.Tensor, line_index: torch.Tensor, num_nodes: int | None = None
) -> int:
    """Check index dtypes, shapes, ranges and line-graph consistency; returns N.

    Raises ``ValueError`` when an index is out of range or a line edge (e', e) does not meet at
    one node (target(e') != source(e)). Does not look for cycles (see :func:`validate_dag`).
    Cost: O(E + L), vectorised, a few host synchronisations.
    """
    E = check_index("edge_index", edge_index, "[2,E]")
    check_index("line_index", line_index, "[2,L]")
    N = _infer_num_nodes(edge_index, num_nodes)
    _check_range("edge_index", edge_index, N, "node")
    _check_range("line_index", line_index, E, "edge")
    if line_index.numel() > 0:
        mismatch = edge_index[1, line_index[0]] != edge_index[0, line_index[1]]
        if bool(mismatch.any()):
            bad = torch.nonzero(mismatch).flatten()
            i = int(bad[0])
            e_in, e_out = int(line_index[0, i]), int(line_index[1, i])
            raise ValueError(
                f"line_index is inconsistent with edge_index: line edge {i} = ({e_in} -> "
                f"{e_out}) needs target(edge {e_in}) == source(edge {e_out}), got "
                f"{int(edge_index[1, e_in])} != {int(edge_index[0, e_out])} "
                f"({bad.numel()} such line edges)"
            )
    return N


def validate_dag(
    edge_index: torch.Tensor, line_index: torch.Tensor, num_nodes: int
) -> torch.Tensor:
    """Check a batch of DAGs and its line graph; return the node levels ``[N]``.

    Raises ``ValueError`` when an index is out of range, a line edge (e', e) does not meet at
    one node (target(e') != source(e)), or the node graph contains a cycle.
    Cost: O(N + E + L) time and memory, one host synchronisation per topological level.
    """
    N = check_dag_indices(edge_index, line_index, num_nodes)
    return topological_levels(edge_index, N)


def weakly_connected_components(
    edge_index: torch.Tensor, num_nodes: int
) -> tuple[torch.Tensor, int]:
    """Weakly connected components (the graphs of a batch).

    Returns (labels LongTensor ``[N]`` in ``0..G-1``, numbered by their smallest node id, G).
    Min-label propagation with pointer jumping; each round is vectorised over all edges.
    Cost: O((N + E) · rounds) time, rounds ≈ log of the diameter in practice; O(N + E) memory.
    """
    device = edge_index.device
    label = torch.arange(num_nodes, device=device)
    if num_nodes == 0:
        return label, 0
    src, dst = edge_index[0], edge_index[1]
    while True:
        low = torch.minimum(label[src], label[dst])
        new = label.scatter_reduce(0, src, low, reduce="amin")
        new = new.scatter_reduce(0, dst, low, reduce="amin")
        new = new[new]  # pointer jumping: label[i] <= i always, so this only lowers labels
        if torch.equal(new, label):
            break
        label = new
    roots, comp = torch.unique(label, return_inverse=True)
    return comp, int(roots.numel())
