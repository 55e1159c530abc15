"""ONNX export of the shipped model configurations: ONNX Runtime agrees with torch (<= 1e-3 abs
on logits), sidecars detect stale exports, graph index feeds, and the added ONNX translations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.checkpoint import CONFIG_FILE, file_sha256, save_checkpoint
from models.graph import PLSTMGraph
from models.image_spec import grayscale_image_spec
from models.molecule_features import (
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    batch_graphs,
    featurize_smiles,
)
from models.onnx.export import (
    OnnxExport,
    ensure_export,
    export_checkpoint,
    export_model,
    stale_reason,
)
from models.onnx.files import ONNX_FILE, read_sidecar, sidecar_path
from models.onnx.graph import PAD_GRAPH_NODES, graph_feeds, squarings_for
from models.onnx.runtime import (
    check_onnx_agreement,
    create_session,
    graph_agreement,
    image_agreement,
    random_dag_graph,
    random_graph_batches,
    run_image_session,
    run_session,
)
from models.onnx.symbolics import register_symbolics
from models.registry import create_model
from plstm_core.ops.dag import prepare_dag
from plstm_core.ops.dag_structure import build_line_index

CPU = ["CPUExecutionProvider"]
SHA = "0" * 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def randomize(model: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    """Perturb every parameter, so that the zero-initialised gate weights depend on the input
    too (otherwise every gate is a constant and the test would miss gate bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def arrow_model(**overrides) -> nn.Module:
    """PLSTMVision built like the shipped arrow-pointing model (training/experiments.py)."""
    args = {"img_size": 96, "patch_size": 8, "in_chans": 3, "num_classes": 2, **overrides}
    return randomize(create_model("plstm_vis_t", **args), seed=1)


def solubility_model() -> PLSTMGraph:
    """PLSTMGraph built like the shipped solubility model (experiment solubility-plstm)."""
    model = create_model(
        "plstm_graph",
        num_node_features=NUM_NODE_FEATURES,
        num_edge_features=NUM_EDGE_FEATURES,
        num_classes=3,
        task="classification",
        dropout=0.0,
        dim=96,
        depth=4,
        num_heads=4,
    )
    return randomize(model, seed=2)


@pytest.mark.slow
def test_full_arrow_config_agrees(tmp_path: Path) -> None:
    model = arrow_model()
    assert len(model.blocks) == 12 and model.dim == 192
    spec, _ = grayscale_image_spec(96, 8)
    export = export_model(
        model, tmp_path / ONNX_FILE, architecture="plstm_vis_t", weights_sha256=SHA, input_spec=spec
    )
    assert export.info["image_size"] == [96, 96] and export.info["kind"] == "image"
    # export_model compared batches of 2 and 1 random images; one more image here
    assert export.info["check_max_abs_diff"] <= 1e-3
    session = create_session(export.path, CPU)
    assert image_agreement(session, model, (96, 96), 3, batch_sizes=(1,), seed=5) <= 1e-3


@pytest.fixture(scope="module")
def vision_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small arrow-style checkpoint saved with bf16 weights."""
    model = arrow_model(img_size=32, depth=2, dim=32, num_heads=2)
    spec, pre = grayscale_image_spec(32, 8)
    return save_checkpoint(
        model,
        tmp_path_factory.mktemp("vis"),
        name="plstm_vis_t",
        labels=["no", "yes"],
        input_spec=spec,
        preprocessing=pre,
        dtype="bfloat16",
    )


@pytest.fixture(scope="module")
def vision_export(vision_checkpoint: Path) -> OnnxExport:
    return export_checkpoint(vision_checkpoint)


def test_checkpoint_export_sidecar_and_agreement(
    vision_checkpoint: Path, vision_export: OnnxExport
) -> None:
    assert vision_export.path == vision_checkpoint / ONNX_FILE and not vision_export.reused
    info = json.loads(sidecar_path(vision_export.path).read_text())
    config = json.loads((vision_checkpoint / CONFIG_FILE).read_text())
    assert info["weights_sha256"] == config["weights_sha256"]
    assert info["onnx_sha256"] == file_sha256(vision_export.path)
    assert (info["kind"], info["image_size"], info["channels"], info["opset"]) == (
        "image",
        [32, 32],
        3,
        18,
    )
    assert check_onnx_agreement(vision_checkpoint) <= 1e-3
    session = create_session(vision_export.path, CPU)
    logits = run_session(session, {"images": torch.rand(5, 3, 32, 32)})
    assert logits.shape == (5, 2)  # any batch size
    with pytest.raises(RuntimeError, match="ONNX Runtime failed"):  # fixed resolution
        run_image_session(session, torch.rand(1, 3, 40, 40))


def test_stale_exports_are_detected_and_redone(
    vision_checkpoint: Path, vision_export: OnnxExport, tmp_path: Path
) -> None:
    out = tmp_path / "copy.onnx"
    shutil.copy(vision_export.path, out)
    shutil.copy(sidecar_path(vision_export.path), sidecar_path(out))
    sha = vision_export.info["weights_sha256"]
    assert stale_reason(out, sha) is None
    assert ensure_export(vision_checkpoint, out=out).reused
    assert "other weights" in stale_reason(out, "f" * 64)
    assert "opset 18, 17 requested" in stale_reason(out, sha, opset=17)
    out.write_bytes(out.read_bytes() + b"\0")  # the ONNX file changed after the export
    assert "modified" in stale_reason(out, sha)
    again = ensure_export(vision_checkpoint, out=out)
    assert not again.reused and stale_reason(out, sha) is None
    sidecar_path(out).write_text("{broken")
    assert read_sidecar(out) is None and "missing or unreadable" in stale_reason(out, sha)
    assert "does not exist" in stale_reason(tmp_path / "none.onnx", sha)


@pytest.fixture(scope="module")
def graph_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[PLSTMGraph, object, int]:
    model = solubility_model()
    export = export_model(
        model,
        tmp_path_factory.mktemp("graph") / ONNX_FILE,
        architecture="plstm_graph",
        weights_sha256=SHA,
    )
    assert export.info["squarings"] == squarings_for(512) == 9
    model.set_method("parallel")
    return model, create_session(export.path, CPU), export.info["squarings"]


def test_shipped_graph_config_agrees_on_random_molecules(graph_export) -> None:
    model, session, squarings = graph_export
    batches = [
        ["CCO", "c1ccccc1O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"],
        ["C"],  # no edges at all
        ["CC", "[Na+].[Cl-]"],  # no line edges; two components in one molecule
        ["CC12CCC3C(CCC4=CC(=O)CCC34C)C1CCC2O", "N#CC(C)(C)C", "O", "CCCCCCCCCCCCCCCCCCCCCC"],
    ]
    graphs = [[featurize_smiles(s) for s in batch] for batch in batches]
    assert graph_agreement(session, model, graphs, squarings) <= 1e-3
    assert (
        graph_agreement(session, model, random_graph_batches(model, 3, seed=7), squarings) <= 1e-3
    )
    x, edge_index, edge_attr, batch = batch_graphs(graphs[0])
    feeds = graph_feeds(model, x, edge_index, batch, 3, edge_attr, squarings=squarings)
    out = run_session(session, feeds)
    assert out.shape == (3 + 1, 3)  # the padding graph comes last
    with torch.inference_mode():
        expected = model(x, edge_index, batch, num_graphs=3, edge_attr=edge_attr)
    torch.testing.assert_close(out[:3], expected, atol=1e-3, rtol=0)


def test_graph_feeds_layout_and_limits(graph_export) -> None:
    model, _, squarings = graph_export
    rng = np.random.default_rng(0)
    graphs = [random_dag_graph(rng, n, NUM_NODE_FEATURES, NUM_EDGE_FEATURES) for n in (1, 7, 12)]
    x, edge_index, edge_attr, batch = batch_graphs(graphs)
    feeds = graph_feeds(model, x, edge_index, batch, 3, edge_attr, squarings=squarings)
    N, E = x.shape[0] + PAD_GRAPH_NODES, edge_index.shape[1] + PAD_GRAPH_NODES - 1
    assert feeds["x"].shape == (N, NUM_NODE_FEATURES) and feeds["edge_index"].shape == (2, E)
    assert feeds["graph_ids"].tolist() == [0, 1, 2, 3]
    assert feeds["batch"][-PAD_GRAPH_NODES:].tolist() == [3] * PAD_GRAPH_NODES
    assert feeds["component_ids"].numel() == 4  # three graphs plus the padding chain
    # the node slots are the same for the reversed DAG, which is why one input serves both
    reverse = feeds["edge_index"].flip(0)
    line = model.blocks[1].mixer.line_graph(reverse, build_line_index(reverse, N))
    assert torch.equal(prepare_dag(reverse, line, N).index.node_slot, feeds["node_slot"])
    assert torch.equal(line, feeds["line_index_1"])
    forward = model.blocks[0].mixer.line_graph(
        feeds["edge_index"], build_line_index(feeds["edge_index"], N)
    )
    assert torch.equal(forward, feeds["line_index_0"])
    kept = feeds["line_index_0"][1]  # D-mode: at most one kept predecessor per edge
    assert torch.unique(kept).numel() == kept.numel() > 0
    chain = torch.stack([torch.arange(39), torch.arange(1, 40)])  # longest path 39 edges
    x40, batch40 = torch.rand(40, NUM_NODE_FEATURES), torch.zeros(40, dtype=torch.long)
    attr40 = torch.rand(39, NUM_EDGE_FEATURES)
    with pytest.raises(ValueError, match=r"needs 6 squarings.*does 5"):
        graph_feeds(model, x40, chain, batch40, 1, attr40, squarings=5)
    cycle = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match="cycle"):
        graph_feeds(model, x40[:3], cycle, batch40[:3], 1, attr40[:3], squarings=squarings)


class _Ops(nn.Module):
    """The ops whose ONNX translations models.onnx.symbolics adds or replaces."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(3, eps=1e-5)

    def forward(self, x: torch.Tensor, index: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        summed = x.new_zeros(groups.shape[0], x.shape[1]).index_add(0, index, x)
        expand = index.view(-1, 1).expand_as(x)
        top = x.new_full((groups.shape[0], x.shape[1]), -1e9).scatter_reduce(
            0, expand, x, reduce="amax", include_self=True
        )
        diag = torch.diag_embed(self.norm(summed + top))  # [G,3,3]
        return diag.sum(-1) + 2.0 * summed + torch.sigmoid(summed)


def test_added_translations_match_torch(tmp_path: Path) -> None:
    register_symbolics()
    module = randomize(_Ops(), seed=3)
    index = torch.tensor([0, 2, 2, 1, 0, 2])  # repeated targets: index_add must accumulate
    args = (torch.randn(6, 3), index, torch.arange(3))
    path = tmp_path / "ops.onnx"
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=False,
        opset_version=18,
        input_names=["x", "index", "groups"],
        dynamic_axes={"x": {0: "M"}, "index": {0: "M"}, "groups": {0: "G"}},
    )
    session = create_session(path, CPU)
    for x, idx, groups in (
        args,
        (torch.randn(9, 3), torch.tensor([3] * 5 + [0, 1, 2, 3]), torch.arange(4)),
    ):
        expected = module(x, idx, groups)
        got = run_session(session, {"x": x, "index": idx, "groups": groups})
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_export_errors(tmp_path: Path) -> None:
    gin = create_model("gin", num_node_features=4, dim=8, depth=1)
    with pytest.raises(ValueError, match="not implemented for GIN"):
        export_model(gin, tmp_path / "g.onnx", architecture="gin", weights_sha256=SHA)
    small = create_model("plstm_graph", num_node_features=4, dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="opset >= 18"):
        export_model(small, tmp_path / "s.onnx", architecture="x", weights_sha256=SHA, opset=17)
    with pytest.raises(ValueError, match="opset must be"):
        export_model(small, tmp_path / "s.onnx", architecture="x", weights_sha256=SHA, opset=12)
    assert not (tmp_path / "s.onnx").exists()


class _Sigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


def test_sigmoid_is_exported_accurately(tmp_path: Path) -> None:
    """Gates are sigmoids: ONNX Runtime's own Sigmoid (relative error ~2e-6) would not do."""
    register_symbolics()
    x = torch.linspace(-12.0, 12.0, 100_001)
    torch.onnx.export(_Sigmoid(), (x,), str(tmp_path / "s.onnx"), dynamo=False, input_names=["x"])
    got = run_session(create_session(tmp_path / "s.onnx", CPU), {"x": x}).double()
    exact = torch.sigmoid(x.double())
    assert float(((got - exact).abs() / exact).max()) < 5e-7
