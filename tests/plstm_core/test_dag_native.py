"""The C kernel of the DAG op (``plstm_core/ops/csrc/dag_recurrent.c``) against the float64
loop reference on random DAG batches (multi-edges, pruned line graphs, shuffled ids), its
structure checks, and the DAG layer and graph model that use it for calls without autograd."""

from __future__ import annotations

import shutil

import pytest
import torch

from models.registry import create_model
from plstm_core.layers.dag_layer import PLSTMDAGLayer
from plstm_core.ops import dag_native
from plstm_core.ops.dag_naive import plstm_dag_naive
from plstm_core.ops.dag_native import (
    NativeDagPlan,
    native_dag_available,
    plstm_dag_native,
    prepare_dag_native,
)
from plstm_core.ops.dag_structure import build_line_index, weakly_connected_components
from tests.plstm_core.test_dag import CASES, NAMES, TOL, random_dag_batch, reference_case, rel_err

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


def _native(edge_index, line_index, inputs, dtype=torch.float64) -> torch.Tensor:
    N = inputs["q"].shape[0]
    with torch.inference_mode():
        plan = prepare_dag_native(edge_index, line_index, N)
        return plstm_dag_native(*(inputs[n].to(dtype) for n in NAMES), plan)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernel_matches_the_loop_reference(case: int, dtype: torch.dtype) -> None:
    edge_index, line_index, inputs, _, ref, _ = reference_case(case)
    h = _native(edge_index, line_index, inputs, dtype)
    assert h.dtype == dtype and h.shape == ref.shape
    assert rel_err(h, ref) <= TOL[dtype]


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_threads_share_the_heads(threads: int, monkeypatch) -> None:
    monkeypatch.setattr(dag_native, "THREADED_WORK", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        edge_index, line_index, inputs, _, ref, _ = reference_case(0)  # 3 heads
        h = _native(edge_index, line_index, inputs)
    finally:
        torch.set_num_threads(before)
    assert rel_err(h, ref) <= TOL[torch.float64]


@pytest.mark.parametrize("shape", ["no edges", "no line edges", "one node"])
def test_empty_pieces(shape: str) -> None:
    gen = torch.Generator().manual_seed(4)
    N = 1 if shape == "one node" else 5
    edge_index = (
        torch.tensor([[0, 2], [1, 3]]) if shape == "no line edges" else torch.empty(2, 0).long()
    )
    line_index = build_line_index(edge_index, N)
    E, L = edge_index.shape[1], line_index.shape[1]
    inputs = {
        "q": torch.randn(N, 2, 3, generator=gen, dtype=torch.float64),
        "k": torch.randn(N, 2, 3, generator=gen, dtype=torch.float64),
        "v": torch.randn(N, 2, 4, generator=gen, dtype=torch.float64),
        "source": torch.rand(E, 2, generator=gen, dtype=torch.float64),
        "transition": torch.rand(L, 2, generator=gen, dtype=torch.float64),
        "mark": torch.rand(E, 2, generator=gen, dtype=torch.float64),
        "direct": torch.rand(N, 2, generator=gen, dtype=torch.float64),
    }
    ref = plstm_dag_naive(*(inputs[n] for n in NAMES), edge_index, line_index)
    assert rel_err(_native(edge_index, line_index, inputs), ref) <= TOL[torch.float64]


@pytest.mark.parametrize(
    ("edge_index", "line_index", "message"),
    [
        ([[0, 1, 2], [1, 2, 0]], None, "contains a cycle: 3 of 4 nodes"),
        ([[0, 1, 1, 2], [1, 2, 3, 2]], None, "contains a cycle"),  # self-loop
        ([[0, 1, 1, 2], [1, 2, 3, 4]], [[0], [1]], "out of range"),
        ([[0, 1, 1, 2], [1, 2, 3, 3]], [[0, 0, 2], [1, 3, 1]], "inconsistent"),
    ],
)
def test_bad_structures_are_refused(edge_index, line_index, message: str) -> None:
    edges = torch.tensor(edge_index)
    lines = build_line_index(edges, 4) if line_index is None else torch.tensor(line_index)
    with torch.inference_mode(), pytest.raises(ValueError, match=message):
        prepare_dag_native(edges, lines, 4)


def test_mismatched_inputs_are_refused() -> None:
    edge_index, line_index, inputs, _, _, _ = reference_case(1)
    with torch.inference_mode():
        plan = prepare_dag_native(edge_index, line_index, inputs["q"].shape[0])
        bad = {**inputs, "mark": inputs["mark"][1:]}
        with pytest.raises(ValueError, match="mark must have shape"):
            plstm_dag_native(*(bad[n] for n in NAMES), plan)


def test_autograd_calls_are_refused() -> None:
    edge_index, line_index, inputs, _, _, _ = reference_case(2)
    assert not native_dag_available(torch.device("cpu"))
    with torch.inference_mode():
        plan = prepare_dag_native(edge_index, line_index, inputs["q"].shape[0])
    with pytest.raises(RuntimeError, match="without autograd"):
        plstm_dag_native(*(inputs[n] for n in NAMES), plan)


def _layer(mode: str) -> PLSTMDAGLayer:
    torch.manual_seed(7)
    layer = PLSTMDAGLayer(12, 3, mode=mode).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
    return layer


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("method", ["parallel", "recurrent"])
def test_layer_without_autograd_matches_the_autograd_path(mode: str, method: str) -> None:
    layer = _layer(mode)
    layer.method = method
    edge_index, N = random_dag_batch(torch.Generator().manual_seed(9), [7, 1, 12, 5])
    x = torch.randn(N, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.inference_mode():
        plan = layer.prepare(edge_index, N)
        assert isinstance(plan.plan, NativeDagPlan)
        h = layer(x, edge_index, plan=plan)
    ref = layer(x.clone().requires_grad_(True), edge_index)
    assert rel_err(h, ref) <= 1e-10


def test_plan_prepared_without_autograd_serves_a_call_with_it() -> None:
    layer = _layer("P")
    edge_index, N = random_dag_batch(torch.Generator().manual_seed(2), [9, 4])
    with torch.no_grad():
        plan = layer.prepare(edge_index, N)
    x = torch.randn(N, 12, dtype=torch.float64, requires_grad=True)
    h = layer(x, edge_index, plan=plan)
    (grad,) = torch.autograd.grad(h.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_disabled_kernel_leaves_the_pytorch_methods(monkeypatch) -> None:
    monkeypatch.setenv("PLSTM_NATIVE_KERNELS", "0")
    layer = _layer("D")
    edge_index, N = random_dag_batch(torch.Generator().manual_seed(5), [6, 6])
    with torch.inference_mode():
        assert not isinstance(layer.prepare(edge_index, N).plan, NativeDagPlan)


def test_graph_model_answers_as_without_the_kernel(monkeypatch) -> None:
    torch.manual_seed(0)
    model = create_model(
        "plstm_graph", num_node_features=5, num_edge_features=3, dim=16, depth=3, num_heads=2
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    edge_index, N = random_dag_batch(torch.Generator().manual_seed(3), [4, 9, 1, 6])
    x = torch.randn(N, 5, generator=torch.Generator().manual_seed(8))
    edge_attr = torch.rand(edge_index.shape[1], 3, generator=torch.Generator().manual_seed(6))
    # random_dag_batch relabels the nodes: a node's graph is the component it lies in
    batch, G = weakly_connected_components(edge_index, N)
    with torch.inference_mode():
        native = model(x, edge_index, batch, G, edge_attr)
        monkeypatch.setenv("PLSTM_NATIVE_KERNELS", "0")
        reference = model(x, edge_index, batch, G, edge_attr)
    assert rel_err(native, reference.double()) <= 1e-5
