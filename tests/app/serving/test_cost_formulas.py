"""Cost predictions against measurements on small sizes: the peak memory of live tensors
(bench/peak_memory.py) of every model family and path, the shipped arrow model's on the meta
device, and the time of calibrated tiny models. The time tests run torch on one thread: on a
machine busier than its cores, a multi-threaded op waits for its slowest thread to be scheduled
and a forward of a few milliseconds takes anything up to a second, calibration included."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from app.serving import backends
from app.serving.cost_calibration import build_cost_profile, model_family
from app.serving.cost_formulas import Architecture, GraphBatch, ImageBatch, formula, grid_forms_on
from app.serving.repository import READY, ModelEntry, warm_up
from bench.peak_memory import PeakMemory
from models.molecule_features import (
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    MolGraph,
    batch_graphs,
)
from models.registry import create_model
from plstm_core.ops.workspace import release_scratch

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "model_repository" / "arrow-pointing" / "1"
MEMORY_FACTOR = 2.5
"""Largest ratio between predicted and measured peak memory (either way) on tiny models."""
TIME_FACTOR = 3.0
PATCH = 4
GRAPH = {
    "num_node_features": NUM_NODE_FEATURES,
    "num_edge_features": NUM_EDGE_FEATURES,
    "dim": 16,
    "depth": 2,
    "num_classes": 3,
}


def _vision(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {"img_size": 16, "patch_size": PATCH, "num_classes": 2, "dim": 16, "depth": 2}
    if name == "plstm_vis_t":
        config["chunk_size"] = 2
    return create_model(name, num_heads=2, **config).eval()


def _graph(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    heads = {"num_heads": 2} if name == "plstm_graph" else {}
    return create_model(name, **GRAPH, **heads).eval()


def _molecule(nodes: int, seed: int) -> MolGraph:
    """A chain with a shortcut every third node (rings), as canonical DAG edges."""
    gen = torch.Generator().manual_seed(seed)
    src = list(range(nodes - 1)) + list(range(0, nodes - 2, 3))
    dst = list(range(1, nodes)) + list(range(2, nodes, 3))
    edge_index = torch.tensor([src, dst])
    x = torch.rand(nodes, NUM_NODE_FEATURES, generator=gen)
    return MolGraph(x, edge_index, torch.rand(len(src), NUM_EDGE_FEATURES, generator=gen))


def _peak(run: Callable[[], object]) -> int:
    """Peak bytes of live tensors of ``run``, the CPU forms' scratch buffers included (they
    are kept across calls: released first, so that this call allocates them)."""
    release_scratch()
    with torch.inference_mode(), PeakMemory() as memory:
        run()
    return memory.peak


IMAGE_CASES = [
    (model, path, size)
    for model, paths in (
        ("plstm_vis_t", ("parallel", "recurrent", "chunkwise")),
        ("vit_t", ("parallel",)),
    )
    for path in paths
    for size in (ImageBatch(3, 8, 8), ImageBatch(1, 6, 10), ImageBatch(1, 20, 20))
] + [
    # over SMALL_GRID tokens: the recurrent C kernel (or, without it, the tiled wavefront)
    ("plstm_vis_t", path, ImageBatch(1, 41, 41))
    for path in ("recurrent", "chunkwise")
]


@pytest.mark.parametrize(("name", "path", "size"), IMAGE_CASES)
def test_image_memory_prediction(name: str, path: str, size: ImageBatch) -> None:
    model = _vision(name)
    family = model_family(model)
    assert family is not None
    if hasattr(model, "set_method"):
        model.set_method(path)
    measured = _peak(lambda: model(torch.rand(size.batch, 3, size.x * PATCH, size.y * PATCH)))
    forms = grid_forms_on(torch.device("cpu"))
    arch = Architecture.from_config(family, model.config, grid_forms=forms)
    predicted = formula(family, path, forms).memory(arch, size)
    assert 1 / MEMORY_FACTOR <= predicted / measured <= MEMORY_FACTOR, (predicted, measured)


GRAPH_CASES = [
    (name, path, graphs)
    for name, paths in (("plstm_graph", ("parallel", "recurrent")), ("gin", ("parallel",)))
    for path in paths
    for graphs in ((10, 10, 10, 10), (30, 5))
]


@pytest.mark.parametrize(("name", "path", "nodes"), GRAPH_CASES)
def test_graph_memory_prediction(name: str, path: str, nodes: tuple[int, ...]) -> None:
    model = _graph(name)
    family = model_family(model)
    assert family is not None
    if hasattr(model, "set_method"):
        model.set_method(path)
    graphs = [_molecule(n, seed) for seed, n in enumerate(nodes)]
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    measured = _peak(lambda: model(x, edge_index, batch, len(graphs), edge_attr))
    forms = grid_forms_on(torch.device("cpu"))
    arch = Architecture.from_config(family, model.config, grid_forms=forms)
    predicted = formula(family, path, forms).memory(arch, GraphBatch.of(graphs))
    assert 1 / MEMORY_FACTOR <= predicted / measured <= MEMORY_FACTOR, (predicted, measured)


@pytest.mark.parametrize(("path", "side"), [("parallel", 24), ("chunkwise", 24)])
def test_shipped_model_memory_prediction_on_the_meta_device(path: str, side: int) -> None:
    """Where the gating matrices dominate, the formula is within 1.5x (checked on the meta
    device: nothing is allocated)."""
    config = json.loads((SHIPPED / "config.json").read_text())
    with torch.device("meta"):
        model = create_model(config["architecture"], **config["config"]).eval()
    model.set_method(path)
    patch = model.patch_size
    measured = _peak(lambda: model(torch.empty(1, 3, side * patch, side * patch, device="meta")))
    arch = Architecture.from_config("plstm_vision", model.config)
    predicted = formula("plstm_vision", path).memory(arch, ImageBatch(1, side, side))
    assert 1 / 1.5 <= predicted / measured <= 1.5, (predicted, measured)


def test_graph_batch_counts_components_and_line_edges() -> None:
    two_parts = MolGraph(torch.zeros(5, 1), torch.tensor([[0, 1, 3], [1, 2, 4]]), torch.zeros(3, 0))
    size = GraphBatch.of([two_parts, _molecule(7, 0)])
    assert (size.graphs, size.components, size.nodes) == (2, 3, 12)
    assert (size.max_nodes, size.max_edges) == (7, 8)
    # line edges: node 1 of the first graph (0→1→2), and in the chain with shortcuts
    assert size.line_edges == 1 + GraphBatch.of([_molecule(7, 0)]).line_edges


def _entry(model: torch.nn.Module, architecture: str) -> ModelEntry:
    return ModelEntry(
        name="tiny",
        version=1,
        directory=Path("."),
        state=READY,
        architecture=architecture,
        config=dict(model.config),
        model=model,
    )


def _fastest(run: Callable[[], object], runs: int = 7) -> float:
    run()  # the first call at a new shape is slower
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


ATTEMPTS = 3
"""A time test calibrates and measures back to back up to this many times: it fails when no
attempt predicts every size within TIME_FACTOR (a burst of load on a shared machine can slow
the calibration or the measurement of one attempt alone)."""


def _time_ratios(
    entry: ModelEntry, path: str, cases: list[tuple[object, Callable[[], object]]]
) -> list[float]:
    """Predicted / measured seconds of every (size, run) case after a fresh calibration (after
    the warm-up, as the repository calibrates)."""
    warm_up(entry)
    entry.cost = build_cost_profile(entry, 1024, calibrate=True)
    assert entry.cost is not None and entry.cost.timed
    ratios = []
    for size, run in cases:
        predicted = entry.cost.estimate(path, size).seconds  # type: ignore[arg-type]
        assert predicted is not None
        ratios.append(predicted / _fastest(run))
    return ratios


def _within(ratios: list[float]) -> bool:
    return all(1 / TIME_FACTOR <= r <= TIME_FACTOR for r in ratios)


@pytest.mark.parametrize("path", ["parallel", "recurrent", "chunkwise"])
def test_image_time_prediction(one_thread: None, path: str) -> None:
    entry = _entry(_vision("plstm_vis_t"), "plstm_vis_t")
    cases = []
    for size in (ImageBatch(2, 4, 4), ImageBatch(1, 6, 6), ImageBatch(1, 4, 8)):
        images = torch.rand(size.batch, 3, size.x * PATCH, size.y * PATCH)
        cases.append((size, lambda images=images: backends.run_images(entry, images, path)))
    for _ in range(ATTEMPTS):
        ratios = _time_ratios(entry, path, cases)
        if _within(ratios):
            break
    assert _within(ratios), ratios


@pytest.mark.parametrize("path", ["parallel", "recurrent"])
def test_graph_time_prediction(one_thread: None, path: str) -> None:
    entry = _entry(_graph("plstm_graph"), "plstm_graph")
    cases = []
    for nodes in ((10, 10), (16,)):
        graphs = [_molecule(n, seed) for seed, n in enumerate(nodes)]
        run = lambda graphs=graphs: backends.run_graphs(entry, graphs, path)  # noqa: E731
        cases.append((GraphBatch.of(graphs), run))
    for _ in range(ATTEMPTS):
        ratios = _time_ratios(entry, path, cases)
        if _within(ratios):
            break
    assert _within(ratios), ratios


def test_a_profile_travels_as_json() -> None:
    entry = _entry(_vision("plstm_vis_t"), "plstm_vis_t")
    profile = build_cost_profile(entry, 512, calibrate=False)
    assert profile is not None and not profile.timed
    again = type(profile).from_meta(json.loads(json.dumps(profile.to_meta())))
    assert again == profile
    assert again.memory_budget == 512 * 2**20
    size = ImageBatch(1, 8, 8)
    assert again.estimate("parallel", size) == profile.estimate("parallel", size)
    assert profile.estimate("parallel", size).seconds is None
