"""Request graphs and SMILES tensors → model inputs (app.api.molecules)."""

from __future__ import annotations

import pytest
import torch

from app.api.body_decoding import DecodedTensor
from app.api.molecules import (
    InvalidGraph,
    featurize_input,
    graphs_from_request,
    graphs_from_tensor,
    smiles_from_tensor,
)
from app.api.schemas.v1 import GraphInput, MoleculeLimits, PredictRequest
from app.api.schemas.v2 import RequestInput
from app.api.tensor_inputs import InvalidTensor
from models.molecule_features import featurize_graph, featurize_smiles


def _same(a, b) -> None:
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.edge_index, b.edge_index)
    torch.testing.assert_close(a.edge_attr, b.edge_attr)


def _request(*graphs: dict) -> PredictRequest:
    return PredictRequest.model_validate({"graphs": list(graphs)})


def _error(request: PredictRequest, **limits: int) -> str:
    with pytest.raises(InvalidGraph) as err:
        graphs_from_request(request, MoleculeLimits.derived(**limits))
    assert err.value.status_code == 422
    return err.value.message


def test_both_forms_featurize_like_the_model_code():
    atoms = ["C", "C", {"element": "O", "hydrogens": 1}]
    graphs = graphs_from_request(
        _request({"smiles": "c1ccccc1O"}, {"atoms": atoms, "bonds": [[0, 1, 1], [1, 2, 1]]}),
        MoleculeLimits(),
    )
    _same(graphs[0], featurize_smiles("c1ccccc1O"))
    _same(graphs[1], featurize_graph(["C", "C", {"element": "O", "hydrogens": 1}],
                                     [[0, 1, 1], [1, 2, 1]]))  # fmt: skip
    _same(graphs[1], featurize_smiles("CCO"))


def test_errors_name_the_field_path():
    good = {"smiles": "CCO"}
    assert (
        _error(_request(good, good, {"smiles": "C1CC"}))
        == "graphs[2].smiles: invalid SMILES 'C1CC'"
    )
    five = ["C"] * 5
    bonds = [[0, 1, 1], [1, 2, 1], [2, 3, 1], [3, 7, 1]]
    assert (
        _error(_request({"atoms": five, "bonds": bonds}))
        == "graphs[0].bonds[3]: atom index 7 out of range (5 atoms)"
    )
    assert (
        _error(_request(good, {"atoms": ["C", "Xx"]}))
        == "graphs[1].atoms[1].element: unknown element 'Xx'"
    )
    assert _error(_request({"smiles": " "})) == "graphs[0].smiles: empty string"
    assert _error(_request({"atoms": ["C", "C"], "bonds": [[0, 1, 1], [1, 0, 2]]})) == (
        "graphs[0].bonds[1]: duplicate bond between atoms 0 and 1 (also bonds[0])"
    )
    pentavalent = {"atoms": ["C"] * 6, "bonds": [[0, i, 1] for i in range(1, 6)]}
    assert _error(_request(pentavalent)).startswith("graphs[0].atoms/bonds: not a valid molecule")


def test_max_atoms_and_max_graphs():
    heptane = {"smiles": "CCCCCCC"}
    assert len(graphs_from_request(_request(heptane), MoleculeLimits.derived(max_atoms=7))) == 1
    assert _error(_request(heptane), max_atoms=6) == (
        "graphs[0].smiles: 7 heavy atoms exceed the limit of 6 per graph"
    )
    water = {"atoms": ["O", "H", "H"], "bonds": [[0, 1, 1], [0, 2, 1]]}
    one_atom = MoleculeLimits.derived(max_atoms=1)
    assert graphs_from_request(_request(water), one_atom)[0].num_nodes == 1
    ethane = {"atoms": ["C", "C"], "bonds": [[0, 1, 1]]}
    assert _error(_request(water, ethane), max_atoms=1) == (
        "graphs[1].atoms: 2 heavy atoms exceed the limit of 1 per graph"
    )
    assert _error(_request(water, water, water), max_graphs=2) == (
        "graphs: 3 graphs exceed the limit of 2 per request"
    )
    with pytest.raises(InvalidGraph, match=r"^mol\.smiles: 3 heavy atoms exceed"):
        featurize_input(GraphInput(smiles="CCO"), "mol", MoleculeLimits.derived(max_atoms=2))


def _tensor(**fields) -> DecodedTensor:
    return DecodedTensor.of(RequestInput(**fields))


def _smiles_tensor(smiles: list[str], shape: list[int] | None = None) -> DecodedTensor:
    return _tensor(name="smiles", shape=shape or [len(smiles)], datatype="BYTES", data=smiles)


SMILES = ["CCO", "c1ccccc1", "CC(=O)O"]


@pytest.mark.parametrize("shape", [[3], [3, 1]])
def test_smiles_tensor_featurizes_like_the_model_code(shape: list[int]) -> None:
    graphs = graphs_from_tensor(_smiles_tensor(SMILES, shape))
    for graph, s in zip(graphs, SMILES, strict=True):
        _same(graph, featurize_smiles(s))


def test_smiles_from_a_column_tensor() -> None:
    assert smiles_from_tensor(_smiles_tensor(SMILES, [3, 1])) == SMILES


@pytest.mark.parametrize(
    ("tensor", "limits", "expected"),
    [
        (_smiles_tensor(["CCO", "C1CC"]), {}, "smiles[1]: invalid SMILES 'C1CC'"),
        (_smiles_tensor(["CCCC"]), {"limits": MoleculeLimits.derived(max_atoms=3)},
         "smiles[0]: 4 heavy atoms exceed the limit"),
        (_smiles_tensor(SMILES), {"max_batch": 2}, "batch of 3 exceeds the limit of 2"),
        (_smiles_tensor(["C"] * 4, [2, 2]), {}, "expected [B] or [B, 1]"),
        (_smiles_tensor([], [0]), {}, "the batch is empty"),
        (_tensor(name="smiles", shape=[1], datatype="FP32", data=[1.0]), {},
         "datatype FP32 given, graph models take BYTES"),
    ],
)  # fmt: skip
def test_bad_smiles_tensor_is_a_400_naming_it(
    tensor: DecodedTensor, limits: dict, expected: str
) -> None:
    with pytest.raises(InvalidTensor) as err:
        graphs_from_tensor(tensor, **limits)
    assert expected in err.value.message and err.value.status_code == 400
