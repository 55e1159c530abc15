"""Tests of the DAG pLSTM op: both methods vs the float64 loop reference, chains and grids
written as DAGs vs the 1D / 2D ops, structure helpers and input validation."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch

from plstm_core.ops.dag import METHODS, plstm_dag, prepare_dag
from plstm_core.ops.dag_naive import plstm_dag_naive
from plstm_core.ops.dag_structure import (
    build_line_index,
    topological_levels,
    validate_dag,
    weakly_connected_components,
)
from plstm_core.ops.grid_naive import plstm_2d_naive

NAMES = ("q", "k", "v", "source", "transition", "mark", "direct")
TOL = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 2e-2}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs error relative to the reference's max magnitude."""
    ref = ref.detach()
    scale = ref.abs().max().clamp_min(1e-30)
    return float((x.detach().double() - ref).abs().max() / scale)


def random_dag_batch(
    gen: torch.Generator, sizes: list[int], *, extra_edges: int = 0
) -> tuple[torch.Tensor, int]:
    """A disjoint union of random DAGs with shuffled node and edge ids.

    Each graph orders its nodes by a random permutation and only draws edges from earlier to
    later nodes (so it is acyclic); a hub with fan-out >= 3 and a sink with fan-in >= 3 are
    added to graphs of 6+ nodes. ``extra_edges`` duplicates random edges (multi-edges).
    """
    edges = []
    offset = 0
    for n in sizes:
        perm = (torch.randperm(n, generator=gen) + offset).tolist()
        p = min(1.0, 2.5 / max(n, 1))
        pairs = set()
        for i in range(n):
            for j in range(i + 1, n):
                if float(torch.rand(1, generator=gen)) < p:
                    pairs.add((i, j))
        if n >= 6:
            pairs.update({(0, 2), (0, 3), (0, 5), (1, n - 1), (2, n - 1), (3, n - 1)})
        edges += [(perm[i], perm[j]) for i, j in sorted(pairs)]
        offset += n
    relabel = torch.randperm(offset, generator=gen)
    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).T
    if extra_edges and edge_index.shape[1]:
        dup = torch.randint(edge_index.shape[1], (extra_edges,), generator=gen)
        edge_index = torch.cat([edge_index, edge_index[:, dup]], dim=1)
    edge_index = relabel[edge_index]
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=gen)]
    return edge_index.contiguous(), offset


def random_inputs(
    gen: torch.Generator, N: int, E: int, L: int, H: int, K: int, V: int
) -> dict[str, torch.Tensor]:
    """float64 inputs with moderate gates (negative transitions included)."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "q": randn(N, H, K),
        "k": randn(N, H, K),
        "v": randn(N, H, V),
        "source": torch.sigmoid(randn(E, H)),
        "transition": 0.6 * torch.tanh(randn(L, H)),
        "mark": torch.sigmoid(randn(E, H)),
        "direct": torch.sigmoid(randn(N, H)),
    }


# (seed, graph sizes, heads, K, V, line-edge subset?, duplicated edges)
CASES = [
    (0, [1, 5, 30, 2, 17, 9, 1, 23], 3, 5, 4, False, 0),
    (1, [12, 1, 1, 7, 26, 3], 2, 3, 6, True, 0),
    (2, [8, 19, 4, 1, 11], 1, 4, 3, False, 3),
]


@functools.cache
def reference_case(case: int):
    """Graph, float64 inputs, cotangent, and the naive reference output and gradients."""
    seed, sizes, H, K, V, subset, dups = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    edge_index, N = random_dag_batch(gen, sizes, extra_edges=dups)
    line_index = build_line_index(edge_index, N)
    if subset:  # a D-mode-like sparser line graph: keep a random subset of the line edges
        keep = torch.rand(line_index.shape[1], generator=gen) < 0.6
        line_index = line_index[:, keep]
    E, L = edge_index.shape[1], line_index.shape[1]
    inputs = random_inputs(gen, N, E, L, H, K, V)
    cotangent = torch.randn(N, H, V, generator=gen, dtype=torch.float64)
    leaves = {n: x.clone().requires_grad_(True) for n, x in inputs.items()}
    ref = plstm_dag_naive(*(leaves[n] for n in NAMES), edge_index, line_index)
    grads = torch.autograd.grad((ref * cotangent).sum(), [leaves[n] for n in NAMES])
    return edge_index, line_index, inputs, cotangent, ref.detach(), grads


def test_random_batches_are_rich() -> None:
    """The test graphs have several roots, isolated nodes and fan-in / fan-out > 2."""
    for case in range(len(CASES)):
        edge_index, _, inputs, *_ = reference_case(case)
        N = inputs["q"].shape[0]
        indeg = torch.bincount(edge_index[1], minlength=N)
        outdeg = torch.bincount(edge_index[0], minlength=N)
        assert int((indeg == 0).sum()) >= 3
        assert int(((indeg == 0) & (outdeg == 0)).sum()) >= 1
        assert int(indeg.max()) > 2 and int(outdeg.max()) > 2
        _, G = weakly_connected_components(edge_index, N)
        assert len(CASES[case][1]) <= G


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_matches_naive_reference(case: int, dtype: torch.dtype, method: str) -> None:
    edge_index, line_index, inputs, cotangent, ref, ref_grads = reference_case(case)
    leaves = {n: inputs[n].to(dtype).requires_grad_(True) for n in NAMES}
    h = plstm_dag(*(leaves[n] for n in NAMES), edge_index, line_index, method=method)
    assert h.dtype == dtype
    assert h.shape == ref.shape
    assert rel_err(h, ref) <= TOL[dtype]
    grads = torch.autograd.grad((h.double() * cotangent).sum(), [leaves[n] for n in NAMES])
    for name, g, g_ref in zip(NAMES, grads, ref_grads, strict=True):
        assert g.dtype == dtype
        err = rel_err(g, g_ref)
        assert err <= TOL[dtype], f"grad of {name}: {err:.3g}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda(method: str) -> None:
    edge_index, line_index, inputs, cotangent, ref, ref_grads = reference_case(0)
    dev = torch.device("cuda")
    leaves = {n: inputs[n].float().to(dev).requires_grad_(True) for n in NAMES}
    ei, li = edge_index.to(dev), line_index.to(dev)
    plan = prepare_dag(ei, li, ref.shape[0], method=method)
    h = plstm_dag(*(leaves[n] for n in NAMES), ei, li, method=method, plan=plan)
    assert h.device.type == "cuda"
    assert rel_err(h.cpu(), ref) <= 1e-4
    grads = torch.autograd.grad((h.double() * cotangent.to(dev)).sum(), [leaves[n] for n in NAMES])
    for name, g, g_ref in zip(NAMES, grads, ref_grads, strict=True):
        assert rel_err(g.cpu(), g_ref) <= 1e-4, name
    bad = ei.clone()
    bad[1, 0] = bad[0, 0]  # a self-loop
    with pytest.raises(ValueError, match=r"cycle|inconsistent"):
        plstm_dag(*(leaves[n] for n in NAMES), bad, li, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16(method: str) -> None:
    edge_index, line_index, inputs, cotangent, *_ = reference_case(0)
    leaves = {n: inputs[n].to(torch.bfloat16).requires_grad_(True) for n in NAMES}
    h = plstm_dag(*(leaves[n] for n in NAMES), edge_index, line_index, method=method)
    assert h.dtype == torch.bfloat16
    grads = torch.autograd.grad((h.double() * cotangent).sum(), [leaves[n] for n in NAMES])
    # reference on the bf16-rounded values, in float64
    exact = {n: leaves[n].detach().double().requires_grad_(True) for n in NAMES}
    ref = plstm_dag_naive(*(exact[n] for n in NAMES), edge_index, line_index)
    ref_grads = torch.autograd.grad((ref * cotangent).sum(), [exact[n] for n in NAMES])
    assert rel_err(h, ref) <= TOL[torch.bfloat16]
    for name, g, g_ref in zip(NAMES, grads, ref_grads, strict=True):
        assert g.dtype == torch.bfloat16
        assert rel_err(g, g_ref) <= TOL[torch.bfloat16], name


def test_mixed_dtypes_promote() -> None:
    edge_index, line_index, inputs, _, ref, _ = reference_case(1)
    args = {n: inputs[n].float() for n in NAMES}
    args["transition"] = inputs["transition"]  # float64 -> computed and returned in float64
    for method in METHODS:
        h = plstm_dag(*(args[n] for n in NAMES), edge_index, line_index, method=method)
        assert h.dtype == torch.float64
        # the float32 inputs were rounded; only fp32 accuracy can be expected
        assert rel_err(h, ref) <= 1e-4


def test_methods_agree_and_plan_reuse() -> None:
    edge_index, line_index, inputs, _, ref, _ = reference_case(0)
    N = inputs["q"].shape[0]
    outs = []
    for method in METHODS:
        plan = prepare_dag(edge_index, line_index, N, method=method)
        h1 = plstm_dag(
            *(inputs[n] for n in NAMES), edge_index, line_index, method=method, plan=plan
        )
        h2 = plstm_dag(
            *(inputs[n] for n in NAMES), edge_index.clone(), line_index, method=method, plan=plan
        )
        assert rel_err(h1, ref) <= 1e-10
        assert torch.equal(h1, h2)
        outs.append(h1)
    assert rel_err(outs[0], outs[1]) <= 1e-10


def test_plan_mismatch_raises() -> None:
    edge_index, line_index, inputs, *_ = reference_case(0)
    N = inputs["q"].shape[0]
    args = [inputs[n] for n in NAMES]
    plan = prepare_dag(edge_index, line_index, N, method="parallel")
    with pytest.raises(ValueError, match="method"):
        plstm_dag(*args, edge_index, line_index, method="recurrent", plan=plan)
    other = edge_index.clone()
    other[:, [0, 1]] = other[:, [1, 0]]
    with pytest.raises(ValueError, match="different edge_index"):
        plstm_dag(*args, other, line_index, method="parallel", plan=plan)
    with pytest.raises(ValueError, match="DagPlan"):
        plstm_dag(*args, edge_index, line_index, method="parallel", plan="plan")


@pytest.mark.parametrize("method", METHODS)
def test_empty_pieces(method: str) -> None:
    """Isolated nodes only (E = 0), edges without line edges (L = 0), no nodes at all."""
    gen = torch.Generator().manual_seed(7)
    H, K, V = 2, 3, 5
    graphs = [
        (torch.empty(2, 0, dtype=torch.long), 6),  # E = 0, L = 0
        (torch.tensor([[0, 0, 3, 5], [1, 2, 4, 4]]), 7),  # L = 0, fan-in 2, isolated node 6
    ]
    for edge_index, N in graphs:
        line_index = build_line_index(edge_index, N)
        assert line_index.shape == (2, 0)
        inputs = random_inputs(gen, N, edge_index.shape[1], 0, H, K, V)
        leaves = {n: inputs[n].float().requires_grad_(True) for n in NAMES}
        exact = {n: inputs[n].clone().requires_grad_(True) for n in NAMES}
        h = plstm_dag(*(leaves[n] for n in NAMES), edge_index, line_index, method=method)
        ref = plstm_dag_naive(*(exact[n] for n in NAMES), edge_index, line_index)
        assert rel_err(h, ref) <= 1e-4
        w = torch.randn(N, H, V, generator=gen, dtype=torch.float64)
        # with E = 0 or L = 0 the empty gates take no part in the graph (grad None)
        grads = torch.autograd.grad(
            (h.double() * w).sum(), [leaves[n] for n in NAMES], allow_unused=True
        )
        ref_grads = torch.autograd.grad(
            (ref * w).sum(), [exact[n] for n in NAMES], allow_unused=True
        )
        for name, g, g_ref in zip(NAMES, grads, ref_grads, strict=True):
            if leaves[name].numel():
                assert rel_err(g, g_ref) <= 1e-4, name
    empty = random_inputs(gen, 0, 0, 0, H, K, V)
    h = plstm_dag(
        *(empty[n] for n in NAMES),
        torch.empty(2, 0, dtype=torch.long),
        torch.empty(2, 0, dtype=torch.long),
        method=method,
    )
    assert h.shape == (0, H, V)


def chain_as_dag(B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B chains of T nodes: edge (b, t) = node (b, t) -> (b, t+1), t < T-1; node id b·T + t."""
    b, t = torch.meshgrid(torch.arange(B), torch.arange(T - 1), indexing="ij")
    node = (b * T + t).flatten()
    edge_index = torch.stack([node, node + 1])
    # line edge (t-1 -> t) for 1 <= t < T-1; edge id of (b, t) is b·(T-1) + t
    bl, tl = torch.meshgrid(torch.arange(B), torch.arange(1, T - 1), indexing="ij")
    e_out = (bl * (T - 1) + tl).flatten()
    line_index = torch.stack([e_out - 1, e_out])
    return edge_index, line_index


@pytest.mark.parametrize("method", METHODS)
def test_chain_equals_1d(method: str) -> None:
    from plstm_core.ops.sequence_naive import plstm_1d_naive

    gen = torch.Generator().manual_seed(11)
    B, H, T, K, V = 3, 2, 37, 4, 3
    q, k = (torch.randn(B, H, T, K, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, T, V, generator=gen, dtype=torch.float64)
    source, mark, direct = (
        torch.sigmoid(torch.randn(B, H, T, generator=gen, dtype=torch.float64)) for _ in range(3)
    )
    transition = torch.tanh(torch.randn(B, H, T, generator=gen, dtype=torch.float64))
    ref = plstm_1d_naive(q, k, v, source, transition, mark, direct)

    edge_index, line_index = chain_as_dag(B, T)
    assert torch.equal(build_line_index(edge_index, B * T), line_index)

    def nodes(x: torch.Tensor) -> torch.Tensor:  # [B,H,T,*] -> [B·T,H,*]
        return x.transpose(1, 2).reshape(B * T, H, *x.shape[3:])

    def gate(x: torch.Tensor, t: slice) -> torch.Tensor:  # [B,H,T] -> [B·T',H]
        return x[:, :, t].transpose(1, 2).reshape(-1, H)

    args = (
        nodes(q),
        nodes(k),
        nodes(v),
        gate(source, slice(0, T - 1)),  # edge t leaves node t
        gate(transition, slice(1, T - 1)),  # line edge (t-1 -> t) sits at node t
        gate(mark, slice(1, T)),  # edge t-1 is read at node t
        gate(direct, slice(0, T)),
    )
    h = plstm_dag(*(a.float() for a in args), edge_index, line_index, method=method)
    h = h.reshape(B, T, H, V).transpose(1, 2)
    assert rel_err(h, ref) <= 1e-4
    h64 = plstm_dag(*args, edge_index, line_index, method=method)
    assert rel_err(h64.reshape(B, T, H, V).transpose(1, 2), ref) <= 1e-10
    if importlib.util.find_spec("plstm_core.ops.sequence") is not None:
        from plstm_core.ops.sequence import plstm_1d

        for m in ("recurrent", "parallel"):
            h1 = plstm_1d(q, k, v, source, transition, mark, direct, method=m)
            assert rel_err(h1, h64.reshape(B, T, H, V).transpose(1, 2)) <= 1e-10


@pytest.mark.parametrize("T", [2, 3, 4, 5, 16, 17, 32, 33])
def test_chain_lengths_around_powers_of_two(T: int) -> None:
    """The number of squarings must cover the longest path exactly at the 2^j boundaries."""
    gen = torch.Generator().manual_seed(T)
    edge_index, line_index = chain_as_dag(2, T)
    inputs = random_inputs(gen, 2 * T, edge_index.shape[1], line_index.shape[1], 2, 3, 2)
    inputs["transition"] = torch.sign(inputs["transition"])  # |T| = 1: no decay hides a miss
    ref = plstm_dag_naive(*(inputs[n] for n in NAMES), edge_index, line_index)
    for method in METHODS:
        h = plstm_dag(*(inputs[n] for n in NAMES), edge_index, line_index, method=method)
        assert rel_err(h, ref) <= 1e-10, method


def grid_as_dag(B: int, X: int, Y: int):
    """The 2D grid DAG of ``plstm_2d``; returns the index tensors and gate gather indices."""

    def node(b: int, x: int, y: int) -> int:
        return (b * X + x) * Y + y

    edges, src_gate, mark_gate = [], [], []  # gate indices into [B,X,Y,2] flattened
    edge_id = {}
    for b in range(B):
        for x in range(X):
            for y in range(Y):
                for o, (dx, dy) in enumerate(((1, 0), (0, 1))):
                    if x + dx < X and y + dy < Y:
                        edge_id[(b, x, y, o)] = len(edges)
                        edges.append((node(b, x, y), node(b, x + dx, y + dy)))
                        src_gate.append(node(b, x, y) * 2 + o)
                        mark_gate.append(node(b, x + dx, y + dy) * 2 + o)
    lines, trans_gate = [], []  # into [B,X,Y,2,2] flattened
    for b in range(B):
        for x in range(X):
            for y in range(Y):
                incoming = {0: (b, x - 1, y, 0), 1: (b, x, y - 1, 1)}
                for i, key_in in incoming.items():
                    for o in range(2):
                        if key_in in edge_id and (b, x, y, o) in edge_id:
                            lines.append((edge_id[key_in], edge_id[(b, x, y, o)]))
                            trans_gate.append((node(b, x, y) * 2 + i) * 2 + o)
    edge_index = torch.tensor(edges, dtype=torch.long).T
    line_index = torch.tensor(lines, dtype=torch.long).T
    return (
        edge_index,
        line_index,
        torch.tensor(src_gate),
        torch.tensor(mark_gate),
        torch.tensor(trans_gate),
    )


@pytest.mark.parametrize("method", METHODS)
def test_grid_equals_2d(method: str) -> None:
    gen = torch.Generator().manual_seed(5)
    B, H, X, Y, K, V = 2, 2, 4, 5, 3, 4

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k, v = randn(B, H, X, Y, K), randn(B, H, X, Y, K), randn(B, H, X, Y, V)
    source = torch.sigmoid(randn(B, H, X, Y, 2))
    transition = 0.5 * torch.tanh(randn(B, H, X, Y, 2, 2))
    mark = torch.sigmoid(randn(B, H, X, Y, 2))
    direct = torch.sigmoid(randn(B, H, X, Y))
    ref = plstm_2d_naive(q, k, v, source, transition, mark, direct)

    edge_index, line_index, sg, mg, tg = grid_as_dag(B, X, Y)
    N = B * X * Y
    full = build_line_index(edge_index, N)
    assert sorted(map(tuple, full.T.tolist())) == sorted(map(tuple, line_index.T.tolist()))

    def nodes(x: torch.Tensor) -> torch.Tensor:  # [B,H,X,Y,*] -> [N,H,*]
        return x.movedim(1, 3).reshape(N, H, *x.shape[4:])

    def per_head(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # gate -> [rows,H]
        return x.movedim(1, -1).reshape(-1, H)[idx]

    args = (
        nodes(q),
        nodes(k),
        nodes(v),
        per_head(source, sg),
        per_head(transition, tg),
        per_head(mark, mg),
        nodes(direct),
    )
    leaves = [a.float().requires_grad_(True) for a in args]
    h = plstm_dag(*leaves, edge_index, line_index, method=method)
    h_grid = h.reshape(B, X, Y, H, V).movedim(3, 1)
    assert rel_err(h_grid, ref) <= 1e-4
    h64 = plstm_dag(*args, edge_index, line_index, method=method)
    h64_grid = h64.reshape(B, X, Y, H, V).movedim(3, 1)
    assert rel_err(h64_grid, ref) <= 1e-10
    if importlib.util.find_spec("plstm_core.ops.grid") is not None:
        from plstm_core.ops.grid import plstm_2d

        for m in ("recurrent", "parallel"):
            h2 = plstm_2d(q, k, v, source, transition, mark, direct, method=m)
            assert rel_err(h2, h64_grid) <= 1e-10


def test_build_line_index_hand_made() -> None:
    #        e0: 0->1, e1: 0->2, e2: 1->2, e3: 2->3, e4: 1->3, e5: 3->4, e6: 2->4, e7: 5->6
    edge_index = torch.tensor([[0, 0, 1, 2, 1, 3, 2, 5], [1, 2, 2, 3, 3, 4, 4, 6]])
    expected = torch.tensor([[0, 1, 2, 0, 3, 4, 1, 2], [2, 3, 3, 4, 5, 5, 6, 6]])
    assert torch.equal(build_line_index(edge_index, 8), expected)
    assert torch.equal(build_line_index(edge_index), expected)  # num_nodes inferred
    levels = validate_dag(edge_index, expected, 8)
    assert levels.tolist() == [0, 1, 2, 3, 4, 0, 1, 0]
    assert topological_levels(edge_index, 8).tolist() == levels.tolist()
    comp, G = weakly_connected_components(edge_index, 8)
    assert G == 3
    assert comp.tolist() == [0, 0, 0, 0, 0, 1, 1, 2]
    empty = build_line_index(torch.empty(2, 0, dtype=torch.long), 3)
    assert empty.shape == (2, 0) and empty.dtype == torch.long


def test_components_long_path() -> None:
    """Label propagation needs many rounds on a long path numbered from both ends."""
    n = 50
    order = torch.tensor([i // 2 if i % 2 == 0 else n - 1 - i // 2 for i in range(n)])
    edge_index = torch.stack([order[:-1], order[1:]])
    edge_index = torch.where(edge_index[0] < edge_index[1], edge_index, edge_index.flip(0))
    comp, G = weakly_connected_components(torch.cat([edge_index, edge_index + n], 1), 2 * n)
    assert G == 2 and comp.tolist() == [0] * n + [1] * n


def small_valid() -> dict:
    gen = torch.Generator().manual_seed(3)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 2, 3, 3]])
    line_index = build_line_index(edge_index, 4)
    inputs = random_inputs(gen, 4, 4, line_index.shape[1], 2, 3, 2)
    return {**inputs, "edge_index": edge_index, "line_index": line_index}


def call(args: dict, method: str = "parallel") -> torch.Tensor:
    return plstm_dag(*(args[n] for n in (*NAMES, "edge_index", "line_index")), method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"edge_index": torch.tensor([[0, 1, 1, 2], [1, 2, 3, 0]])}, "cycle"),
        ({"edge_index": torch.tensor([[0, 1, 1, 2], [1, 2, 3, 2]])}, "cycle"),  # self-loop
        ({"edge_index": torch.tensor([[0, 1, 1, 2], [1, 2, 3, 4]])}, "out of range"),
        ({"edge_index": torch.tensor([[0, -1, 1, 2], [1, 2, 3, 3]])}, "out of range"),
        ({"line_index": torch.tensor([[0, 1, 4], [1, 3, 2]])}, "line_index.*out of range"),
        ({"line_index": torch.tensor([[0, 0, 2], [1, 3, 1]])}, "inconsistent"),
        ({"edge_index": torch.tensor([[0, 1, 1, 2], [1, 2, 3, 3]]).int()}, "edge_index.*long"),
        ({"edge_index": torch.tensor([[0, 1, 1], [1, 2, 3], [0, 0, 0]])}, "edge_index.*shape"),
        ({"line_index": torch.zeros(3, dtype=torch.long)}, "line_index.*shape"),
        ({"k": torch.randn(4, 2, 4)}, "k must have shape"),
        ({"v": torch.randn(4, 3, 2)}, "v must have shape"),
        ({"q": torch.randn(4, 2)}, "q must have 3 dimensions"),
        ({"direct": torch.rand(3, 2)}, "direct must have shape"),
        ({"source": torch.rand(5, 2)}, "source must have shape"),
        ({"mark": torch.rand(4, 1)}, "mark must have shape"),
        ({"transition": torch.rand(2, 2)}, "transition must have shape"),
        ({"transition": torch.ones(3, 2, dtype=torch.long)}, "transition must be float"),
    ],
)
def test_invalid_input(change: dict, message: str, method: str) -> None:
    args = {**small_valid(), **change}
    with pytest.raises(ValueError, match=message):
        call(args, method)


def test_valid_small_and_unknown_method() -> None:
    args = small_valid()
    h = call(args)
    ref = plstm_dag_naive(*(args[n] for n in (*NAMES, "edge_index", "line_index")))
    assert rel_err(h, ref) <= 1e-10
    with pytest.raises(ValueError, match="method"):
        call(args, "chunkwise")


def test_validate_dag_names_problems() -> None:
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match="contains a cycle"):
        validate_dag(edge_index, torch.empty(2, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="contains a cycle"):
        topological_levels(edge_index, 3)
    with pytest.raises(ValueError, match="num_nodes"):
        build_line_index(edge_index, -1)
