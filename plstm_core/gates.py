"""Gate parameterisations: raw pre-activations → the gate tensors that the pLSTM ops take.

Paper sections 4.2-4.3 and D.1 / DESIGN.md section 4. Every function here is pure (no
parameters, no state) and differentiable in its floating inputs.

- Source, Mark and Direct gates are ``sigmoid`` of their logits (paper B.1).
- Transitions are bounded by ``tanh(scale · logit)`` with ``scale = 5`` (paper Table 4:
  "Transition Scaling Factor 5", T = tanh(5·(b + Wx))).
- **P-mode** (propagation, paper eq. 9-10): for every incoming edge the absolute Transitions
  into the outgoing edges sum to at most one. On the 2D grid this is
  ``T = γ·[[α, α], [1−α, 1−α]]`` (paper's [out, in] order) with ``α = sigmoid(angle logit)``,
  ``γ = tanh(5 · decay logit) ∈ (−1, 1)``; the column sum of |T| is exactly ``|γ|``. On a DAG the
  Transitions out of one incoming edge are ``γ · softmax`` over its line edges.
- **D-mode** (distribution, paper section 4.2): the line graph is reduced to a multitree so that
  two edges are joined by at most one path; then ``|T| ≤ 1`` per entry is enough. On the grid
  the cross entry "horizontal (direction 0) → vertical (direction 1)" is zero; on a DAG every
  outgoing edge keeps the line edge from exactly one chosen incoming edge.
- **U** (unconstrained, a counter-example for the stability tests only): every entry
  ``tanh(5 · logit)``, no constraint; path counts grow exponentially (paper C.1).

Layouts follow the op contracts (DESIGN.md section 3): grid transitions are ``[..., 2, 2]``
indexed ``[..., in, out]`` (direction 0: (x,y)→(x+1,y), direction 1: (x,y)→(x,y+1)); DAG
transitions are ``[L, H]`` over the line edges ``line_index [2, L]`` (row 0 incoming edge e',
row 1 outgoing edge e).
"""

from __future__ import annotations

import torch

TRANSITION_SCALE = 5.0
"""Scaling factor inside the tanh of every Transition (paper Table 4)."""


def gate_logits(t: torch.Tensor) -> torch.Tensor:
    """Gate pre-activations in at least float32: bf16 rounding of γα + γ(1−α) could push a
    P-mode column sum above one (by ~0.4 %), which compounds along long paths."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def sigmoid_gate(logit: torch.Tensor) -> torch.Tensor:
    """Source, Mark and Direct gates: ``sigmoid(logit)`` ∈ (0, 1), any shape."""
    return torch.sigmoid(logit)


def bounded_decay(logit: torch.Tensor, *, scale: float = TRANSITION_SCALE) -> torch.Tensor:
    """The decay factor γ = ``tanh(scale · logit)`` ∈ (−1, 1), any shape.

    With the Table 4 initialisation (bias 1, scale 5) γ = tanh(5) ≈ 0.99991, i.e. just below
    criticality; large logits reach γ = 1 exactly in floating point.
    """
    return torch.tanh(scale * logit)


def pmode_grid_matrix(alpha: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The P-mode grid Transition from an angle α and a decay γ (paper eq. 10).

    alpha, gamma ``[...]`` (broadcastable) → ``[..., 2, 2]`` in the ``[..., in, out]`` layout:
    ``T[..., i, 0] = γα`` and ``T[..., i, 1] = γ(1−α)`` for both incoming directions i.
    For α ∈ [0, 1] the absolute sum over outgoing directions is ``|γ|`` for each incoming edge.
    """
    alpha, gamma = torch.broadcast_tensors(alpha, gamma)
    out = torch.stack((gamma * alpha, gamma * (1.0 - alpha)), dim=-1)  # [..., out]
    return torch.stack((out, out), dim=-2)  # [..., in, out]


def pmode_grid_transition(
    orientation_logit: torch.Tensor,
    decay_logit: torch.Tensor,
    *,
    scale: float = TRANSITION_SCALE,
) -> torch.Tensor:
    """P-mode 2D Transition: α = sigmoid(orientation_logit), γ = tanh(scale · decay_logit).

    orientation_logit, decay_logit ``[...]`` → transition ``[..., 2, 2]`` (``[..., in, out]``)
    with ``transition[..., i, 0] = γα``, ``transition[..., i, 1] = γ(1−α)``. The signal
    propagates mainly along Δx/Δ = α (paper C.2); Σ_out |T[i, out]| = |γ| ≤ 1 (paper eq. 9).
    """
    alpha = torch.sigmoid(orientation_logit)
    return pmode_grid_matrix(alpha, bounded_decay(decay_logit, scale=scale))


def dmode_grid_transition(logits: torch.Tensor, *, scale: float = TRANSITION_SCALE) -> torch.Tensor:
    """D-mode 2D Transition: three free entries ``tanh(scale · logit)``, the cross entry zero.

    logits ``[..., 3]`` → transition ``[..., 2, 2]`` (``[..., in, out]``):
    ``T[..., 0, 0] = tanh(5·logits[..., 0])`` (horizontal stays horizontal),
    ``T[..., 1, 0] = tanh(5·logits[..., 1])`` (vertical turns horizontal),
    ``T[..., 1, 1] = tanh(5·logits[..., 2])`` (vertical stays vertical) and
    ``T[..., 0, 1] = 0``: a horizontal edge may not turn vertical, so any path runs vertically
    first and horizontally after one turn — a unique path between any two edges (a multitree).
    """
    if logits.shape[-1:] != (3,):
        raise ValueError(f"logits must have a last dimension of 3, got shape {tuple(logits.shape)}")
    t = torch.tanh(scale * logits)
    zero = torch.zeros_like(t[..., 0])
    row0 = torch.stack((t[..., 0], zero), dim=-1)  # incoming horizontal
    row1 = torch.stack((t[..., 1], t[..., 2]), dim=-1)  # incoming vertical
    return torch.stack((row0, row1), dim=-2)


def unconstrained_grid_transition(
    logits: torch.Tensor, *, scale: float = TRANSITION_SCALE
) -> torch.Tensor:
    """Unconstrained 2D Transition (counter-example only): logits ``[..., 4]`` → ``[..., 2, 2]``.

    Every entry is ``tanh(scale · logit)`` in the order (0,0), (0,1), (1,0), (1,1) of
    ``[in, out]``. Nothing bounds the number of paths, so at |T| ≈ 1 cell states grow like the
    binomial path count (paper eq. 35).
    """
    if logits.shape[-1:] != (4,):
        raise ValueError(f"logits must have a last dimension of 4, got shape {tuple(logits.shape)}")
    return torch.tanh(scale * logits).unflatten(-1, (2, 2))


def _check_line_index(line_index: torch.Tensor, rows: int | None, name: str = "line_index") -> None:
    if not isinstance(line_index, torch.Tensor) or line_index.dtype != torch.long:
        raise ValueError(f"{name} must be a long tensor")
    if line_index.dim() != 2 or line_index.shape[0] != 2:
        raise ValueError(f"{name} must have shape [2,L], got {tuple(line_index.shape)}")
    if rows is not None and line_index.shape[1] != rows:
        raise ValueError(
            f"{name} has L = {line_index.shape[1]} line edges but the logits have {rows} rows"
        )


def segment_softmax(logits: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Softmax of ``logits [L, ...]`` over the rows that share the same ``group [L]`` id.

    Cost O(L) time and memory (scatter max, exp, index_add). Differentiable in ``logits``.
    """
    trailing = logits.shape[1:]
    idx = group.view(-1, *([1] * len(trailing))).expand_as(logits)
    with torch.no_grad():  # a per-group shift does not change the softmax
        gmax = torch.full(
            (num_groups, *trailing), float("-inf"), dtype=logits.dtype, device=logits.device
        )
        gmax = gmax.scatter_reduce(0, idx, logits, reduce="amax", include_self=True)
    ex = torch.exp(logits - gmax.index_select(0, group))
    denom = torch.zeros((num_groups, *trailing), dtype=logits.dtype, device=logits.device)
    denom = denom.index_add(0, group, ex)
    return ex / denom.index_select(0, group)


def pmode_dag_transition(
    angle_logit: torch.Tensor,
    decay_logit: torch.Tensor,
    line_index: torch.Tensor,
    num_edges: int,
    *,
    scale: float = TRANSITION_SCALE,
) -> torch.Tensor:
    """P-mode DAG Transition: ``T[l] = tanh(scale·decay_logit[l]) · softmax_{out(e')} angle``.

    angle_logit, decay_logit ``[L, H]`` (one value per line edge l = (e' → e) and head),
    line_index ``[2, L]``, num_edges = E. The softmax runs over all line edges that leave the
    same incoming edge e' (row 0 of line_index), so for every e' Σ_e |T[e', e]| = |γ| ≤ 1
    (paper eq. 9), with equality at γ = 1 (when every line edge of e' carries the same γ, as it
    does when γ is computed from the shared node). Returns ``[L, H]``.
    Cost O(L·H) time and memory.
    """
    _check_line_index(line_index, angle_logit.shape[0])
    if decay_logit.shape != angle_logit.shape:
        raise ValueError(
            f"decay_logit must have the shape of angle_logit {tuple(angle_logit.shape)}, "
            f"got {tuple(decay_logit.shape)}"
        )
    share = segment_softmax(angle_logit, line_index[0], num_edges)
    return bounded_decay(decay_logit, scale=scale) * share


def dmode_dag_keep(edge_index: torch.Tensor, line_index: torch.Tensor) -> torch.Tensor:
    """D-mode pruning of a DAG's line graph to a multitree: a bool mask ``[L]`` of kept line edges.

    edge_index ``[2, E]`` (row 0 source node, row 1 target node), line_index ``[2, L]``.
    For every outgoing edge e exactly one of its line edges (e' → e) is kept: the one whose
    incoming edge e' has the smallest source node index (ties: smallest edge index e').
    Every edge then has at most one predecessor in the line graph, which makes the kept line
    graph a forest of out-trees — a multitree with a single path between any two edges.
    Deterministic for a given edge_index; O(L) time and memory.
    """
    if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.long:
        raise ValueError("edge_index must be a long tensor")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2,E], got {tuple(edge_index.shape)}")
    _check_line_index(line_index, None)
    num_edges = edge_index.shape[1]
    if line_index.shape[1] == 0:
        return torch.zeros(0, dtype=torch.bool, device=line_index.device)
    e_in, e_out = line_index[0], line_index[1]
    key = edge_index[0, e_in] * max(num_edges, 1) + e_in  # unique per incoming edge
    best = torch.full((num_edges,), torch.iinfo(torch.long).max, device=key.device)
    best = best.scatter_reduce(0, e_out, key, reduce="amin", include_self=True)
    return key == best[e_out]


def dmode_dag_transition(
    logits: torch.Tensor, keep: torch.Tensor, *, scale: float = TRANSITION_SCALE
) -> torch.Tensor:
    """D-mode DAG Transition: ``tanh(scale · logit)`` on the kept line edges, 0 on the pruned.

    logits ``[L, H]``, keep ``[L]`` (bool, from :func:`dmode_dag_keep`) → ``[L, H]``.
    |T| ≤ 1 per entry; with at most one kept predecessor per edge there is one path only.
    """
    if keep.shape != logits.shape[:1]:
        raise ValueError(
            f"keep must have shape [L] = ({logits.shape[0]},), got {tuple(keep.shape)}"
        )
    return torch.tanh(scale * logits) * keep.to(logits.dtype).unsqueeze(-1)
