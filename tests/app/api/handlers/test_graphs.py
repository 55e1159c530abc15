"""Molecule requests: decoding, one model call per request, answers per molecule
(app.api.handlers.graphs)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import torch

from app.api.body_decoding import DecodedTensor
from app.api.handlers import GRAPHS, Decoded, Predicted
from app.api.handlers import graphs as graphs_module
from app.api.schemas.v1 import PredictRequest
from app.api.schemas.v2 import RequestInput
from app.core.settings import Settings
from app.serving.cost_formulas import GraphBatch
from models.molecule_features import featurize_smiles

SMILES = ["CCO", "c1ccccc1O", "CC(=O)N"]


def _entry(config: dict, names: list[str]) -> SimpleNamespace:
    return SimpleNamespace(name="mol", version=2, labels=names, config=config)


def _decoded() -> Decoded:
    graphs = [featurize_smiles(s) for s in SMILES]
    return Decoded(graphs, GraphBatch.of(graphs))


def test_v1_request_decodes_to_the_model_codes_graphs_and_their_size() -> None:
    body = PredictRequest.model_validate({"graphs": [{"smiles": s} for s in SMILES]})
    decoded = asyncio.run(GRAPHS.decode_v1(body, Settings()))
    expected = [featurize_smiles(s) for s in SMILES]
    for graph, want in zip(decoded.inputs, expected, strict=True):
        torch.testing.assert_close(graph.x, want.x)
        torch.testing.assert_close(graph.edge_index, want.edge_index)
    assert decoded.size == GraphBatch.of(expected)


def test_v2_tensor_decodes_like_the_v1_request() -> None:
    tensor = DecodedTensor.of(RequestInput(name="smiles", shape=[3], datatype="BYTES", data=SMILES))
    decoded = asyncio.run(GRAPHS.decode_v2(tensor, None, Settings()))  # type: ignore[arg-type]
    assert [g.num_nodes for g in decoded.inputs] == [featurize_smiles(s).num_nodes for s in SMILES]
    assert decoded.size == GraphBatch.of(decoded.inputs)


@pytest.mark.parametrize(
    ("smiles", "threads"),
    [(["CCO"], 0), (["CC(C)CCCC(C)C1CCC2C1(CCC3C2CC=C4C3(CCC(C4)O)C)C"], 0), (["C" * 40], 1)],
)
def test_small_requests_decode_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, smiles: list[str], threads: int
) -> None:
    """Cholesterol (59 nodes plus bonds) stays inline; 40 carbons (79) take one thread hop."""
    hops = []

    async def to_thread(function, *args):
        hops.append(function)
        return function(*args)

    monkeypatch.setattr(graphs_module.anyio.to_thread, "run_sync", to_thread)
    body = PredictRequest.model_validate({"graphs": [{"smiles": s} for s in smiles]})
    decoded = asyncio.run(GRAPHS.decode_v1(body, Settings()))
    assert len(hops) == threads
    assert [g.num_nodes for g in decoded.inputs] == [featurize_smiles(s).num_nodes for s in smiles]


def test_classification_answer_ranks_every_class_per_molecule() -> None:
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(6))
    entry = _entry({"num_classes": 2}, ["inactive", "active"])
    answer = GRAPHS.encode_v1(
        entry, _decoded(), Predicted(logits, "recurrent", 0.0, 0.0), start=0.0
    )  # type: ignore[arg-type]
    assert answer.task == "classification" and answer.path == "recurrent"
    for g, result in enumerate(answer.results):
        best = int(logits[g].argmax())
        assert result.predictions[0].index == best
        assert result.predictions[0].probability == pytest.approx(
            float(logits[g].softmax(-1)[best])
        )
        assert result.num_atoms == featurize_smiles(SMILES[g]).num_nodes


def test_regression_answer_gives_named_values_per_molecule() -> None:
    values = torch.randn(3, 2, generator=torch.Generator().manual_seed(7))
    entry = _entry({"task": "regression", "num_classes": 2}, ["logS", "logP"])
    answer = GRAPHS.encode_v1(entry, _decoded(), Predicted(values, "parallel", 0.0, 0.0), start=0.0)  # type: ignore[arg-type]
    assert answer.task == "regression"
    for g, result in enumerate(answer.results):
        assert [v.name for v in result.values] == ["logS", "logP"]
        assert [v.value for v in result.values] == pytest.approx(values[g].tolist())


def test_v2_output_tensors_are_fp32_with_the_batch_shape() -> None:
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(8))
    probabilities, raw = GRAPHS.encode_v2(logits, ["probabilities", "logits"])
    assert (probabilities.shape, raw.shape) == ([3, 2], [3, 2])
    assert probabilities.data == pytest.approx(logits.softmax(-1).flatten().tolist())
    assert raw.data == pytest.approx(logits.flatten().tolist())
