"""pLSTM on a batch of DAGs (paper section 4, eq. 5-7, appendix A.2).

One batch of DAGs is one disjoint union of graphs::

    C[e] = Σ_{l=(e'→e)} T[l] · C[e'] + S[e] · k[src(e)] ⊗ v[src(e)]       (eq. 5, on edges)
    h[n] = q[n] · Σ_{e into n} M[e] · C[e] + D[n] · (q[n]·k[n]) · v[n]     (eq. 6, at nodes)

Two methods compute it:

- ``"recurrent"``: topological levels one after another, each level vectorised over every
  graph of the batch (index_select / index_add); only the cell states of edges that cross the
  current level are kept.
- ``"parallel"``: per weakly connected component, the line-graph transfer
  X = (I − A)^-1 = Π_j (I + A^(2^j)) by repeated squaring, the node-pair gating matrix
  G = S_inc · X · M_inc + diag(D) (eq. 7) and one masked linear-attention contraction; all
  components at once, padded to the largest one.

The index bookkeeping of either method depends only on ``edge_index`` / ``line_index``; it is
done once per call, or once per graph structure with :func:`prepare_dag` (pass ``plan=``),
which is what a model with several layers on the same batch of graphs should do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plstm_core.ops.contraction import gated_linear_attention
from plstm_core.ops.dag_structure import (
    check_dag_indices,
    check_index,
    validate_dag,
    weakly_connected_components,
)
from plstm_core.ops.validation import (
    check_method,
    check_same_device,
    check_shape,
    check_tensor,
    compute_dtype,
    output_dtype,
)

METHODS = ("recurrent", "parallel")


@dataclass(frozen=True, eq=False)
class _RecurrentIndex:
    """Per-level index lists, flat in level order and split by the per-level counts."""

    num_levels: int
    n_cons: list[int]  # edges consumed (read) at level l: edges into level-l nodes
    n_new: list[int]  # edges produced at level l: edges out of level-l nodes
    n_line: list[int]  # line edges whose outgoing edge is produced at level l
    n_keep: list[int]  # active edges that stay active after level l
    cons_edge: torch.Tensor  # [E] edge ids, grouped by target level
    cons_node: torch.Tensor  # [E] target node of cons_edge
    cons_pos: torch.Tensor  # [E] position of cons_edge in the active state of its level
    new_edge: torch.Tensor  # [E] edge ids, grouped by source level
    new_src: torch.Tensor  # [E] source node of new_edge
    line_id: torch.Tensor  # [L] line edge ids, grouped by the level of source(e)
    line_in: torch.Tensor  # [L] local index of e' among the consumed edges of that level
    line_out: torch.Tensor  # [L] local index of e among the produced edges of that level
    keep_pos: torch.Tensor  # [Σ n_keep] positions (in the active state) of edges kept


@dataclass(frozen=True, eq=False)
class _ParallelIndex:
    """Padding positions of nodes, edges and line edges in the per-component dense blocks."""

    num_graphs: int  # G weakly connected components
    max_nodes: int  # Nmax
    max_edges: int  # Emax
    num_squarings: int  # J: X = Π_{j<J} (I + A^(2^j))
    node_slot: torch.Tensor  # [N] g·Nmax + local node position
    line_slot: torch.Tensor  # [L] flat index into [G, Emax(e'), Emax(e)]
    source_slot: torch.Tensor  # [E] flat index into [G, Nmax(src), Emax(e)]
    mark_slot: torch.Tensor  # [E] flat index into [G, Emax(e), Nmax(dst)]


@dataclass(frozen=True, eq=False)
class DagPlan:
    """Index bookkeeping of :func:`plstm_dag` for one graph structure and one method.

    Built by :func:`prepare_dag` (which validates the structure); reusable across calls, layers
    and backward passes on the same ``edge_index`` / ``line_index``.
    """

    method: str
    num_nodes: int
    num_edges: int
    num_line_edges: int
    device: torch.device
    edge_index: torch.Tensor
    line_index: torch.Tensor
    index: _RecurrentIndex | _ParallelIndex


def _group(keys: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable grouping: (ids sorted by key, local rank of every item in its group, counts)."""
    order = torch.sort(keys, stable=True).indices
    counts = torch.bincount(keys, minlength=num_groups)
    start = torch.cumsum(counts, 0) - counts
    local = torch.empty_like(keys)
    local[order] = torch.arange(keys.numel(), device=keys.device) - start[keys[order]]
    return order, local, counts


def _recurrent_index(
    src: torch.Tensor, dst: torch.Tensor, line: torch.Tensor, level: torch.Tensor
) -> _RecurrentIndex:
    """CPU bookkeeping for the level-by-level method; O(N + E + L + Σ_l active_l) time."""
    E = src.numel()
    D = int(level.max()) + 1 if level.numel() else 0
    a, b = level[src], level[dst]  # source / target level of every edge
    cons_edge, cons_local, n_cons = _group(b, D)
    new_edge, new_local, n_new = _group(a, D)
    line_id, _, n_line = _group(a[line[1]], D)
    line_in = cons_local[line[0, line_id]]
    line_out = new_local[line[1, line_id]]

    # the active state before level l: edges with a(e) < l <= b(e), ordered by (a(e), e)
    position = torch.full((E,), -1, dtype=torch.long)
    active = torch.empty(0, dtype=torch.long)
    cons_pos, keep_pos, n_keep = [], [], []
    cons_groups = torch.split(cons_edge, n_cons.tolist())
    new_groups = torch.split(new_edge, n_new.tolist())
    for l in range(D):
        position[active] = torch.arange(active.numel())
        cons_pos.append(position[cons_groups[l]])
        keep = torch.nonzero(b[active] > l).flatten()
        keep_pos.append(keep)
        n_keep.append(keep.numel())
        active = torch.cat([active[keep], new_groups[l]])
    empty = torch.empty(0, dtype=torch.long)
    return _RecurrentIndex(
        num_levels=D,
        n_cons=n_cons.tolist(),
        n_new=n_new.tolist(),
        n_line=n_line.tolist(),
        n_keep=n_keep,
        cons_edge=cons_edge,
        cons_node=dst[cons_edge],
        cons_pos=torch.cat(cons_pos) if cons_pos else empty,
        new_edge=new_edge,
        new_src=src[new_edge],
        line_id=line_id,
        line_in=line_in,
        line_out=line_out,
        keep_pos=torch.cat(keep_pos) if keep_pos else empty,
    )


def _parallel_index(
    edge_index: torch.Tensor, line_index: torch.Tensor, num_nodes: int
) -> _ParallelIndex:
    """Bookkeeping for the log-depth method, on the device of ``edge_index``.

    Components by label propagation, padding positions by stable sorts, and acyclicity plus
    the number of squarings J from the padded node adjacency B of every component:
    B^(2^j) ≠ 0 iff some path has at least 2^j edges, so j* = max{j : B^(2^j) ≠ 0} bounds
    the longest node path (in edges) 2^j* <= Dp < 2^(j*+1), and a DAG has B^(2^j) = 0 once
    2^j >= Nmax. J = j* + 1 = ceil(log2(Dp + 1)) gives 2^J > Dp >= P + 1 for the longest
    line-graph path P, so Σ_{p<2^J} A^p = (I − A)^-1 exactly (for a full line graph
    P = Dp − 1 and J = ceil(log2(P + 2))). No loop over levels: O(G·Nmax³·log Nmax) time
    and O(G·Nmax²) memory for the squarings, O(N + E + L) for the rest, a few host syncs.
    """
    src, dst = edge_index[0], edge_index[1]
    comp, G = weakly_connected_components(edge_index, num_nodes)
    _, node_local, node_counts = _group(comp, G)
    edge_comp = comp[src]
    _, edge_local, edge_counts = _group(edge_comp, G)
    Nmax, Emax = torch.stack([node_counts.max(), edge_counts.max()]).tolist() if G else (0, 0)

    J = 0
    if Emax > 0:
        reach = torch.zeros(G * Nmax * Nmax, device=edge_index.device)
        reach[(edge_comp * Nmax + node_local[src]) * Nmax + node_local[dst]] = 1.0
        power = reach.view(G, Nmax, Nmax)  # B^(2^j) as 0/1 pattern (exact in fp32)
        steps = (Nmax - 1).bit_length()  # 2^steps >= Nmax
        nonzero = []
        for j in range(steps + 1):
            nonzero.append(power.amax(dim=(1, 2)) > 0)
            if j < steps:
                power = torch.matmul(power, power).clamp_(max=1.0)
        flags = torch.stack(nonzero)  # [steps + 1, G], monotone in j
        if bool(flags[-1].any()):
            g = int(torch.nonzero(flags[-1]).flatten()[0])
            node = int(torch.nonzero(comp == g).flatten()[0])
            raise ValueError(
                f"edge_index contains a cycle: the graph (weakly connected component) of "
                f"node {node} has a closed path; pLSTM needs a DAG"
            )
        J = int(flags.any(dim=1).sum())  # j* + 1
    e_in, e_out = line_index[0], line_index[1]
    return _ParallelIndex(
        num_graphs=G,
        max_nodes=Nmax,
        max_edges=Emax,
        num_squarings=J,
        node_slot=comp * Nmax + node_local,
        line_slot=(edge_comp[e_in] * Emax + edge_local[e_in]) * Emax + edge_local[e_out],
        source_slot=(edge_comp * Nmax + node_local[src]) * Emax + edge_local,
        mark_slot=(edge_comp * Emax + edge_local) * Nmax + node_local[dst],
    )


def _to_device(index: _RecurrentIndex, device: torch.device) -> _RecurrentIndex:
    """Move every tensor field of the index in one host-to-device copy."""
    names = [n for n, x in vars(index).items() if isinstance(x, torch.Tensor)]
    if device.type == "cpu":
        return index
    parts = [vars(index)[n] for n in names]
    packed = torch.cat(parts).to(device)
    moved = dict(zip(names, torch.split(packed, [p.numel() for p in parts]), strict=True))
    return _RecurrentIndex(**{**vars(index), **moved})


def prepare_dag(
    edge_index: torch.Tensor,
    line_index: torch.Tensor,
    num_nodes: int,
    *,
    method: str = "parallel",
) -> DagPlan:
    """Validate a batch of DAGs and precompute the index bookkeeping of :func:`plstm_dag`.

    edge_index ``[2,E]``, line_index ``[2,L]`` (long, on the device the op will run on).
    Raises ``ValueError`` for out-of-range indices, line edges that do not meet at a node,
    cycles and unknown methods.

    - ``"parallel"``: runs on the indices' device with no loop over levels (components,
      padding positions, acyclicity and J by repeated squaring of the padded node adjacency).
    - ``"recurrent"``: runs on a CPU copy (one copy each way): topological levels and the
      per-level index lists, O(N + E + L + Σ_l A_l) time, a Python loop over levels.
    """
    check_method(method, METHODS)
    E = check_index("edge_index", edge_index, "[2,E]")
    L = check_index("line_index", line_index, "[2,L]")
    if edge_index.device != line_index.device:
        raise ValueError(
            f"edge_index and line_index must be on one device, got {edge_index.device} "
            f"and {line_index.device}"
        )
    if method == "recurrent":
        edges = edge_index.detach().cpu()
        lines = line_index.detach().cpu()
        level = validate_dag(edges, lines, num_nodes)
        index: _RecurrentIndex | _ParallelIndex = _to_device(
            _recurrent_index(edges[0], edges[1], lines, level), edge_index.device
        )
    else:
        check_dag_indices(edge_index, line_index, num_nodes)
        index = _parallel_index(edge_index, line_index, num_nodes)
    return DagPlan(
        method=method,
        num_nodes=num_nodes,
        num_edges=E,
        num_line_edges=L,
        device=edge_index.device,
        edge_index=edge_index,
        line_index=line_index,
        index=index,
    )


def _check_plan(
    plan: object,
    method: str,
    N: int,
    E: int,
    L: int,
    device: torch.device,
    edge_index: torch.Tensor,
    line_index: torch.Tensor,
) -> DagPlan:
    if not isinstance(plan, DagPlan):
        raise ValueError(f"plan must be a DagPlan from prepare_dag, got {type(plan).__name__}")
    if plan.method != method:
        raise ValueError(f"plan was prepared for method {plan.method!r}, called with {method!r}")
    if (plan.num_nodes, plan.num_edges, plan.num_line_edges) != (N, E, L):
        raise ValueError(
            f"plan was prepared for (N, E, L) = "
            f"{(plan.num_nodes, plan.num_edges, plan.num_line_edges)}, got {(N, E, L)}"
        )
    if plan.device != device:
        raise ValueError(f"plan lives on {plan.device}, inputs on {device}")
    same = (plan.edge_index is edge_index or torch.equal(plan.edge_index, edge_index)) and (
        plan.line_index is line_index or torch.equal(plan.line_index, line_index)
    )
    if not same:
        raise ValueError("plan was prepared for a different edge_index / line_index")
    return plan


def _direct_term(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """D[n] · (q[n]·k[n]) · v[n] for all nodes: ``[N,H,V]``."""
    return (d * (q * k).sum(-1))[..., None] * v


def _recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    m: torch.Tensor,
    d: torch.Tensor,
    ix: _RecurrentIndex,
) -> torch.Tensor:
    """Eq. 5-6 level by level; every level vectorised over all graphs of the batch."""
    H, K, V = q.shape[1], q.shape[2], v.shape[2]
    h = _direct_term(q, k, v, d)
    if ix.cons_edge.numel() == 0:
        return h
    q_cons = torch.split(q.index_select(0, ix.cons_node), ix.n_cons)
    m_cons = torch.split(m.index_select(0, ix.cons_edge), ix.n_cons)
    cons_pos = torch.split(ix.cons_pos, ix.n_cons)
    k_new = torch.split(k.index_select(0, ix.new_src), ix.n_new)
    v_new = torch.split(v.index_select(0, ix.new_src), ix.n_new)
    s_new = torch.split(s.index_select(0, ix.new_edge), ix.n_new)
    t_line = torch.split(t.index_select(0, ix.line_id), ix.n_line)
    line_in = torch.split(ix.line_in, ix.n_line)
    line_out = torch.split(ix.line_out, ix.n_line)
    keep_pos = torch.split(ix.keep_pos, ix.n_keep)

    state = q.new_zeros(0, H, K, V)  # cell states of the edges crossing the current level
    reads = []
    for l in range(ix.num_levels):
        cell_in = None
        if ix.n_cons[l]:
            cell_in = state.index_select(0, cons_pos[l])  # [E_l,H,K,V], edges into level l
            read = torch.einsum("ehk,ehkv->ehv", q_cons[l], cell_in)
            reads.append(read * m_cons[l][..., None])
        cell = state.index_select(0, keep_pos[l])
        if ix.n_new[l]:
            new = (s_new[l][..., None] * k_new[l])[..., None] * v_new[l][..., None, :]
            if ix.n_line[l]:
                carried = cell_in.index_select(0, line_in[l]) * t_line[l][..., None, None]
                new = new.index_add(0, line_out[l], carried)
            cell = torch.cat([cell, new])
        state = cell
    return h.index_add(0, ix.cons_node, torch.cat(reads))


def _parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    m: torch.Tensor,
    d: torch.Tensor,
    ix: _ParallelIndex,
) -> torch.Tensor:
    """Eq. 7: transfer by repeated squaring, gating matrix, one masked contraction."""
    H, V = q.shape[1], v.shape[2]
    G, Nm, Em = ix.num_graphs, ix.max_nodes, ix.max_edges

    def pad_nodes(x: torch.Tensor) -> torch.Tensor:  # [N,H,*] -> [G,H,Nmax,*]
        padded = x.new_zeros((G * Nm, *x.shape[1:])).index_copy(0, ix.node_slot, x)
        return padded.view(G, Nm, *x.shape[1:]).transpose(1, 2)

    def dense(x: torch.Tensor, slot: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        flat = x.new_zeros(G * rows * cols, H).index_add(0, slot, x)  # [G·rows·cols, H]
        return flat.view(G, rows, cols, H).permute(0, 3, 1, 2)  # [G,H,rows,cols]

    gating = torch.diag_embed(pad_nodes(d))  # direct term on the diagonal, [G,H,Nmax,Nmax]
    if Em > 0:
        source_inc = dense(s, ix.source_slot, Nm, Em)  # S[n', e'] = source[e'], src(e') = n'
        mark_inc = dense(m, ix.mark_slot, Em, Nm)  # M[e, n] = mark[e], dst(e) = n
        transfer_mark = mark_inc  # becomes X · M_inc, X = Σ_p A^p = Π_j (I + A^(2^j))
        if t.shape[0] > 0:
            power = dense(t, ix.line_slot, Em, Em)  # A[e', e] = transition[(e' → e)]
            for j in range(ix.num_squarings):
                transfer_mark = transfer_mark + torch.matmul(power, transfer_mark)
                if j + 1 < ix.num_squarings:
                    power = torch.matmul(power, power)
        gating = gating + torch.matmul(source_inc, transfer_mark)
    out = gated_linear_attention(pad_nodes(q), pad_nodes(k), pad_nodes(v), gating)
    return out.transpose(1, 2).reshape(G * Nm, H, V).index_select(0, ix.node_slot)


def plstm_dag(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    edge_index: torch.Tensor,
    line_index: torch.Tensor,
    *,
    method: str = "parallel",
    plan: DagPlan | None = None,
) -> torch.Tensor:
    """pLSTM on a batch of DAGs given as one disjoint union (paper eq. 5-7).

    q, k ``[N,H,K]``, v ``[N,H,V]``, direct ``[N,H]``; edge_index ``[2,E]`` (long; row 0 source
    node, row 1 target node), source ``[E,H]``, mark ``[E,H]``; line_index ``[2,L]`` (long;
    row 0 incoming edge e', row 1 outgoing edge e, target(e') == source(e)), transition
    ``[L,H]``. Returns h ``[N,H,V]`` in the promoted dtype of the inputs (computed in float64
    if any input is float64, else float32)::

        C[e] = Σ_{l=(e'→e)} transition[l] · C[e'] + source[e] · k[src(e)] ⊗ v[src(e)]
        h[n] = q[n] · Σ_{e into n} mark[e] · C[e] + direct[n] · (q[n]·k[n]) · v[n]

    Methods (D topological levels, i.e. longest path D − 1 edges; G weakly connected
    components with at most Nmax nodes and Emax edges; J = ceil(log2(D)), which equals
    ceil(log2(P + 2)) for the longest line-graph path P of a full line graph):

    - ``"recurrent"``: eq. 5-6 level by level, each level vectorised over all graphs.
      Time O((E + L + Σ_l A_l)·H·K·V) with A_l the edges crossing level l, D sequential
      steps; memory O((E + L)·H·K·V) (the states read at each level, kept for backward).
    - ``"parallel"``: eq. 7 with the line-graph transfer X = (I − A)^-1 = Π_{j<J}(I + A^(2^j)),
      gating G[n', n] = Σ_{e' out of n', e into n} S[e'] X[e', e] M[e] + δ D[n] and
      h = ((q kᵀ) ⊙ Gᵀ) v per component, all components batched by padding.
      Time O(G·H·(J·Emax²·(Emax + Nmax) + Nmax²·(Emax + K + V))) plus
      O(G·Nmax³·log Nmax) for the index bookkeeping, no loop over levels; memory
      O(G·H·(J·Emax·(Emax + Nmax) + Nmax²)).

    ``plan`` (from :func:`prepare_dag` on the same index tensors and method) skips the
    per-call structure validation and index bookkeeping. Invalid input raises ``ValueError``.
    """
    check_method(method, METHODS)
    check_tensor("q", q, 3)
    check_tensor("k", k, 3)
    check_tensor("v", v, 3)
    check_tensor("source", source, 2)
    check_tensor("transition", transition, 2)
    check_tensor("mark", mark, 2)
    check_tensor("direct", direct, 2)
    N, H, K = q.shape
    V = v.shape[2]
    check_shape("k", k, (N, H, K), "[N,H,K]")
    check_shape("v", v, (N, H, V), "[N,H,V]")
    check_shape("direct", direct, (N, H), "[N,H]")
    E = check_index("edge_index", edge_index, "[2,E]")
    L = check_index("line_index", line_index, "[2,L]")
    check_shape("source", source, (E, H), "[E,H]")
    check_shape("mark", mark, (E, H), "[E,H]")
    check_shape("transition", transition, (L, H), "[L,H]")
    check_same_device(
        {
            "q": q,
            "k": k,
            "v": v,
            "source": source,
            "transition": transition,
            "mark": mark,
            "direct": direct,
            "edge_index": edge_index,
            "line_index": line_index,
        }
    )
    if plan is None:
        plan = prepare_dag(edge_index, line_index, N, method=method)
    else:
        plan = _check_plan(plan, method, N, E, L, q.device, edge_index, line_index)

    inputs = (q, k, v, source, transition, mark, direct)
    cd = compute_dtype(*inputs)
    q_, k_, v_, s_, t_, m_, d_ = (x.to(cd) for x in inputs)
    if E == 0:
        h = _direct_term(q_, k_, v_, d_)
    elif isinstance(plan.index, _RecurrentIndex):
        h = _recurrent(q_, k_, v_, s_, t_, m_, d_, plan.index)
    else:
        h = _parallel(q_, k_, v_, s_, t_, m_, d_, plan.index)
    return h.to(output_dtype(*inputs))
