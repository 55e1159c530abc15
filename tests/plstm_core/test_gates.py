"""Gate parameterisations: the P-mode and D-mode constraints of paper 4.2 / 4.3.1 hold."""

from __future__ import annotations

import pytest
import torch

from plstm_core.gates import (
    TRANSITION_SCALE,
    bounded_decay,
    dmode_dag_keep,
    dmode_dag_transition,
    dmode_grid_transition,
    pmode_dag_transition,
    pmode_grid_matrix,
    pmode_grid_transition,
    segment_softmax,
    sigmoid_gate,
    unconstrained_grid_transition,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_dag(num_nodes: int, p: float, g: torch.Generator) -> torch.Tensor:
    """edge_index [2,E]: edges i→j (i before j in a random order) with probability p."""
    order = torch.randperm(num_nodes, generator=g)
    pairs = torch.triu_indices(num_nodes, num_nodes, offset=1)
    keep = torch.rand(pairs.shape[1], generator=g) < p
    return order[pairs[:, keep]]


def line_pairs(edge_index: torch.Tensor) -> torch.Tensor:
    """All (e', e) with target(e') == source(e), by brute force."""
    E = edge_index.shape[1]
    pairs = [(a, b) for a in range(E) for b in range(E) if edge_index[1, a] == edge_index[0, b]]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.contiguous()


def count_line_paths(num_edges: int, line_index: torch.Tensor) -> torch.Tensor:
    """paths[a, b] = number of directed paths from edge a to edge b in the line graph."""
    A = torch.zeros(num_edges, num_edges, dtype=torch.float64)
    if line_index.numel():
        A.index_put_(
            (line_index[0], line_index[1]),
            torch.ones(line_index.shape[1], dtype=torch.float64),
            accumulate=True,
        )
    paths = torch.zeros_like(A)
    power = A.clone()
    for _ in range(num_edges):
        paths += power
        power = power @ A
    return paths


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pmode_grid_column_sums(seed: int, dtype: torch.dtype) -> None:
    g = _gen(seed)
    shape = (3, 2, 5, 7)
    orient = 3 * torch.randn(shape, generator=g, dtype=dtype)
    decay = torch.randn(shape, generator=g, dtype=dtype)
    T = pmode_grid_transition(orient, decay)
    assert T.shape == (*shape, 2, 2)
    alpha, gamma = torch.sigmoid(orient), torch.tanh(TRANSITION_SCALE * decay)
    for i in range(2):  # layout [..., in, out]
        torch.testing.assert_close(T[..., i, 0], gamma * alpha)
        torch.testing.assert_close(T[..., i, 1], gamma * (1 - alpha))
    eps = 10 * torch.finfo(dtype).eps
    sums = T.abs().sum(-1)  # over outgoing directions, per incoming edge
    assert (sums <= 1 + eps).all()
    torch.testing.assert_close(sums, gamma.abs().unsqueeze(-1).expand_as(sums))
    assert (gamma < 0).any(), "random decay logits should produce negative transitions"
    # at criticality (γ = 1) the bound is an equality
    T1 = pmode_grid_transition(orient, torch.full(shape, 20.0, dtype=dtype))
    assert (bounded_decay(torch.tensor(20.0, dtype=dtype)) == 1).item()
    torch.testing.assert_close(T1.abs().sum(-1), torch.ones_like(sums), atol=eps, rtol=0)
    T2 = pmode_grid_matrix(alpha, torch.ones_like(alpha))
    torch.testing.assert_close(T2.sum(-1), torch.ones_like(sums), atol=eps, rtol=0)


def test_pmode_grid_transition_grad() -> None:
    g = _gen(7)
    orient = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    decay = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pmode_grid_transition, (orient, decay))


@pytest.mark.parametrize("seed", range(5))
def test_dmode_grid_cross_entry_zero(seed: int) -> None:
    g = _gen(seed)
    logits = torch.randn(2, 3, 6, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    T = dmode_grid_transition(logits)
    assert T.shape == (2, 3, 6, 5, 2, 2)
    assert (T[..., 0, 1] == 0).all()
    t = torch.tanh(TRANSITION_SCALE * logits)
    assert torch.equal(T[..., 0, 0], t[..., 0])
    assert torch.equal(T[..., 1, 0], t[..., 1])
    assert torch.equal(T[..., 1, 1], t[..., 2])
    assert (T.abs() <= 1).all()
    assert (T < 0).any()
    (T * torch.randn(T.shape, generator=g, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="last dimension of 3"):
        dmode_grid_transition(torch.randn(2, 4, generator=g))


def _grid_line_graph(X: int, Y: int, nonzero: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Edges of an X×Y grid and its line edges where nonzero[in, out] is True."""
    edges: dict[tuple[int, int, int], int] = {}
    for x in range(X):
        for y in range(Y):
            if x + 1 < X:
                edges[(x, y, 0)] = len(edges)
            if y + 1 < Y:
                edges[(x, y, 1)] = len(edges)
    pairs = []
    for x in range(X):
        for y in range(Y):
            incoming = {0: edges.get((x - 1, y, 0)), 1: edges.get((x, y - 1, 1))}
            for i, e_in in incoming.items():
                for o in range(2):
                    e_out = edges.get((x, y, o))
                    if e_in is not None and e_out is not None and nonzero[i, o]:
                        pairs.append((e_in, e_out))
    return len(edges), torch.tensor(pairs, dtype=torch.long).T


def test_dmode_grid_line_graph_is_multitree() -> None:
    g = _gen(3)
    T = dmode_grid_transition(torch.randn(3, generator=g, dtype=torch.float64))
    E, line = _grid_line_graph(5, 6, T != 0)
    assert count_line_paths(E, line).max() == 1
    # the P-mode pattern (all four entries used) has many paths: the check can fail
    Tp = pmode_grid_transition(torch.randn((), generator=g), torch.randn((), generator=g))
    E, line = _grid_line_graph(5, 6, Tp != 0)
    assert count_line_paths(E, line).max() > 1


def test_unconstrained_grid_transition() -> None:
    g = _gen(4)
    logits = torch.randn(3, 5, 4, generator=g)
    T = unconstrained_grid_transition(logits)
    assert T.shape == (3, 5, 2, 2)
    torch.testing.assert_close(T.reshape(3, 5, 4), torch.tanh(TRANSITION_SCALE * logits))
    ones = unconstrained_grid_transition(torch.full((4,), 20.0))
    assert (ones == 1).all() and ones.abs().sum(-1).max() == 2  # violates P-mode
    with pytest.raises(ValueError, match="last dimension of 4"):
        unconstrained_grid_transition(torch.randn(2, 3, generator=g))


def test_sigmoid_gate_range() -> None:
    x = 10 * torch.randn(100, generator=_gen(5), dtype=torch.float64)
    s = sigmoid_gate(x)
    assert ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(s, 1 / (1 + torch.exp(-x)))


@pytest.mark.parametrize("seed", range(4))
def test_segment_softmax(seed: int) -> None:
    g = _gen(seed)
    groups = torch.randint(0, 7, (40,), generator=g)
    logits = 5 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    p = segment_softmax(logits, groups, 9)
    for grp in range(9):
        sel = groups == grp
        if sel.any():
            torch.testing.assert_close(p[sel], torch.softmax(logits[sel], dim=0))


@pytest.mark.parametrize("seed", range(6))
def test_pmode_dag_incoming_sums(seed: int) -> None:
    g = _gen(seed)
    edge_index = random_dag(int(torch.randint(4, 16, (1,), generator=g)), 0.4, g)
    line_index = line_pairs(edge_index)
    E, L, H = edge_index.shape[1], line_index.shape[1], 3
    if L == 0:
        pytest.skip("random graph without line edges")
    angle = 3 * torch.randn(L, H, generator=g, dtype=torch.float64)
    # γ from the shared node: one decay logit per node, gathered per line edge
    node_decay = torch.randn(int(edge_index.max()) + 1, H, generator=g, dtype=torch.float64)
    decay = node_decay[edge_index[0, line_index[1]]]
    T = pmode_dag_transition(angle, decay, line_index, E)
    assert T.shape == (L, H)
    sums = torch.zeros(E, H, dtype=torch.float64).index_add(0, line_index[0], T.abs())
    assert (sums <= 1 + 1e-12).all()
    has_out = torch.zeros(E, dtype=torch.bool)
    has_out[line_index[0]] = True
    gamma = torch.tanh(TRANSITION_SCALE * node_decay[edge_index[1]])
    torch.testing.assert_close(sums[has_out], gamma.abs()[has_out])
    # equality at γ = 1
    T1 = pmode_dag_transition(angle, torch.full_like(decay, 20.0), line_index, E)
    sums1 = torch.zeros(E, H, dtype=torch.float64).index_add(0, line_index[0], T1.abs())
    torch.testing.assert_close(sums1[has_out], torch.ones_like(sums1[has_out]))
    assert (sums1[~has_out] == 0).all()


def test_pmode_dag_validation() -> None:
    line_index = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="decay_logit"):
        pmode_dag_transition(torch.randn(1, 2), torch.randn(1, 3), line_index, 2)
    with pytest.raises(ValueError, match="line_index"):
        pmode_dag_transition(torch.randn(2, 2), torch.randn(2, 2), line_index, 2)


@pytest.mark.parametrize("seed", range(6))
def test_dmode_dag_keeps_one_incoming_line_edge(seed: int) -> None:
    g = _gen(100 + seed)
    edge_index = random_dag(int(torch.randint(4, 16, (1,), generator=g)), 0.5, g)
    line_index = line_pairs(edge_index)
    E, L = edge_index.shape[1], line_index.shape[1]
    keep = dmode_dag_keep(edge_index, line_index)
    assert keep.dtype == torch.bool and keep.shape == (L,)
    kept = line_index[:, keep]
    per_out = torch.bincount(kept[1], minlength=E)
    assert per_out.max() <= 1
    # every outgoing edge that had a predecessor keeps exactly one: the smallest source node
    had = torch.bincount(line_index[1], minlength=E) > 0
    assert torch.equal(per_out > 0, had)
    for e_in, e_out in kept.T.tolist():
        candidates = line_index[0, line_index[1] == e_out]
        assert edge_index[0, e_in] == edge_index[0, candidates].min()
    assert count_line_paths(E, kept).max() <= 1
    logits = torch.randn(L, 2, generator=g, dtype=torch.float64)
    T = dmode_dag_transition(logits, keep)
    assert (T[~keep] == 0).all()
    torch.testing.assert_close(T[keep], torch.tanh(TRANSITION_SCALE * logits[keep]))
    assert (T.abs() <= 1).all()


def test_dmode_dag_fan_in() -> None:
    # 0→2, 1→2, 2→3, 2→4: edges 2 and 3 each keep the line edge from edge 0 (source node 0)
    edge_index = torch.tensor([[1, 0, 2, 2], [2, 2, 3, 4]])
    line_index = line_pairs(edge_index)
    keep = dmode_dag_keep(edge_index, line_index)
    assert sorted(map(tuple, line_index[:, keep].T.tolist())) == [(1, 2), (1, 3)]
    assert dmode_dag_keep(edge_index, torch.zeros(2, 0, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match="keep"):
        dmode_dag_transition(torch.randn(3, 2), keep)
