"""Request / response schemas (app.api.schemas: common, v1, v2, tensors): examples, descriptions,
validators."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from app.api.schemas import common, v1, v2
from app.api.schemas.common import format_location, validation_error_message
from app.api.schemas.tensors import check_tensor, flatten_data
from app.api.schemas.v1 import GraphInput, LimitExceeded, MoleculeLimits, PredictRequest
from app.api.schemas.v2 import (
    InferenceRequest,
    InferenceResponse,
    RequestInput,
    ResponseOutput,
    TensorMetadata,
)

MODELS = [
    cls
    for module in (common, v1, v2)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if issubclass(cls, BaseModel)
    and cls.__module__ == module.__name__
    and cls is not common._Schema
]


def _message(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return validation_error_message(exc.value.errors())


def test_schema_set_is_complete():
    names = {cls.__name__ for cls in MODELS}
    expected = {
        "ClassifyResponse", "PredictRequest", "PredictResponse", "ErrorResponse",
        "ServerMetadata", "ModelMetadata", "InferenceRequest", "InferenceResponse",
        "ModelList", "ModelSummary", "Timings", "Prediction",
    }  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_examples_are_valid_and_fields_described(cls):
    schema = cls.model_json_schema()
    examples = schema.get("examples")
    assert examples, f"{cls.__name__} has no example"
    for example in examples:
        cls.model_validate(example)
    for name, field in schema["properties"].items():
        assert field.get("description"), f"{cls.__name__}.{name} has no description"


def test_openapi_components_describe_every_field():
    from fastapi import FastAPI

    api = FastAPI()

    @api.post("/predict", response_model=v1.PredictResponse)
    def predict(body: PredictRequest) -> dict:  # pragma: no cover - never called
        return {}

    components = api.openapi()["components"]["schemas"]
    for name in ("PredictRequest", "GraphInput", "AtomSpec", "PredictResponse", "GraphResult"):
        for prop, field in components[name]["properties"].items():
            assert field.get("description"), f"{name}.{prop}"


def test_graph_input_forms():
    assert GraphInput.model_validate({"smiles": "CCO"}).smiles == "CCO"
    graph = GraphInput.model_validate(
        {"atoms": ["C", {"element": "O", "charge": -1}], "bonds": [[0, 1, 1]]}
    )
    assert graph.atom_payload() == ["C", {"element": "O", "charge": -1}]
    assert GraphInput.model_validate({"atoms": ["C"]}).bonds is None
    with pytest.raises(ValidationError) as err:
        GraphInput.model_validate({"smiles": "C", "atoms": ["C"]})
    assert "give either smiles or atoms/bonds, not both" in _message(err)
    with pytest.raises(ValidationError) as err:
        GraphInput.model_validate({})
    assert "give smiles or atoms (with bonds)" in _message(err)
    with pytest.raises(ValidationError) as err:
        GraphInput.model_validate({"smile": "C"})
    assert "smile: Extra inputs are not permitted" in _message(err)
    with pytest.raises(ValidationError) as err:
        GraphInput.model_validate({"atoms": [{"element": "C", "charge": "1"}]})
    assert _message(err).startswith("atoms[0].")
    with pytest.raises(ValidationError) as err:
        GraphInput.model_validate({"atoms": ["C", "C"], "bonds": [[0, 1]]})
    assert "bonds[0]" in _message(err)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"atoms": [{"element": "C", "charge": 2**31}]},
         "atoms[0].object.charge: Input should be less than or equal to 8"),
        ({"atoms": [{"element": "C", "charge": -9}]},
         "atoms[0].object.charge: Input should be greater than or equal to -8"),
        ({"atoms": [{"element": "C", "hydrogens": 9}]},
         "atoms[0].object.hydrogens: Input should be less than or equal to 8"),
        ({"atoms": ["C" * 4]}, "atoms[0].symbol: String should have at most 3 characters"),
        ({"atoms": [{"element": ""}]}, "atoms[0].object.element: String should have at least 1"),
        ({"atoms": ["C", "C"], "bonds": [[0, 1, 4]]},
         "bonds[0][2]: bond order must be one of 1, 2, 3, 1.5, got 4"),
        ({"atoms": ["C", "C"], "bonds": [[0, 1, 1e308]]}, "bonds[0][2]: bond order must be one"),
        ({"atoms": ["C", "C"], "bonds": [[0, 2**40, 1]]},
         "bonds[0][1]: Input should be less than or equal to 2147483647"),
        ({"atoms": ["C", "C"], "bonds": [[-1, 1, 1]]},
         "bonds[0][0]: Input should be greater than or equal to 0"),
    ],
)  # fmt: skip
def test_atom_and_bond_numbers_are_bounded(graph: dict, expected: str):
    with pytest.raises(ValidationError) as err:
        GraphInput.model_validate(graph)
    assert _message(err).startswith(expected), _message(err)


def test_schema_bounds_equal_the_featurizer_bounds():
    from models import molecule_features

    assert v1.MAX_ABS_CHARGE == molecule_features.MAX_ABS_CHARGE
    assert v1.MAX_ATOM_HYDROGENS == molecule_features.MAX_ATOM_HYDROGENS


def test_predict_request_limits():
    body = {"graphs": [{"smiles": "CCO"}, {"atoms": ["C", "H", "H", "O"], "bonds": []}] * 2}
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate({"graphs": []})
    assert _message(err).startswith("graphs: List should have at least 1 item")
    request = PredictRequest.model_validate(body, context={"max_graphs": 4, "max_atoms": 2})
    assert len(request.graphs) == 4  # hydrogens do not count as heavy atoms
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate(body, context={"max_graphs": 3})
    assert _message(err) == "graphs: 4 graphs exceed the limit of 3 per request"
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate(body, context={"max_atoms": 1})
    assert _message(err) == "graphs[1].atoms: 2 heavy atoms exceed the limit of 1 per graph"
    with pytest.raises(LimitExceeded) as limit:
        request.check_limits(MoleculeLimits.derived(max_graphs=2))
    assert limit.value.status_code == 422
    request.check_limits(MoleculeLimits())  # no limits: nothing to refuse


def test_flatten_matches_numpy_row_major():
    rng = np.random.default_rng(0)
    array = rng.standard_normal((2, 3, 4))
    assert flatten_data(array.tolist()) == array.ravel().tolist()
    flat = rng.standard_normal(5).tolist()
    assert flatten_data(flat) is flat
    assert flatten_data([[1, [2, 3]], [], [4]]) == [1, 2, 3, 4]


def test_request_input_checks_shape_datatype_and_elements():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((2, 3)).tolist()
    tensor = RequestInput(name="x", shape=[2, 3], datatype="FP32", data=data)
    np.testing.assert_array_equal(tensor.values, np.asarray(data, dtype=np.float32).ravel())
    cases = [
        ({"shape": [2, 2], "datatype": "FP32", "data": data},
         "shape [2, 2] holds 4 elements but data has 6"),
        ({"shape": [1], "datatype": "FLOAT", "data": [1.0]}, "unknown datatype 'FLOAT'"),
        ({"shape": [2], "datatype": "BOOL", "data": [True, 1]},
         "data[1] = 1: expected true or false"),
        ({"shape": [2], "datatype": "UINT8", "data": [3, 256]}, "out of the UINT8 range [0, 255]"),
        ({"shape": [1], "datatype": "INT64", "data": [1.5]}, "expected an integer"),
        ({"shape": [1], "datatype": "FP32", "data": ["a"]}, "expected a number"),
        ({"shape": [1], "datatype": "BYTES", "data": [3]}, "expected a string"),
        ({"shape": [-1], "datatype": "FP32", "data": []}, "shape[0]: Input should be greater"),
    ]  # fmt: skip
    for fields, expected in cases:
        with pytest.raises(ValidationError) as err:
            RequestInput(name="x", **fields)
        assert expected in _message(err), (_message(err), expected)
    with pytest.raises(ValueError, match="expected a finite number"):
        check_tensor("t", [1], "FP64", [float("nan")])


def test_inference_request_as_tritonclient_sends_it():
    # the JSON of tritonclient.http InferInput.set_data_from_numpy(..., binary_data=False)
    body = {
        "id": "7",
        "inputs": [
            {"name": "smiles", "shape": [2, 1], "datatype": "BYTES", "data": ["CCO", "c1ccccc1"]},
            {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
    }
    request = InferenceRequest.model_validate(body)
    assert [i.name for i in request.inputs] == ["smiles", "mask"]
    for bad, expected in (
        ({**body, "inputs": []}, "inputs: List should have at least 1 item"),
        ({**body, "inputs": [body["inputs"][0]] * 2}, "name 'smiles' given twice"),
        ({**body, "outputs": [{"name": "a"}, {"name": "a"}]}, "name 'a' given twice"),
        ({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["C"]}]},
         "inputs[0].name: Field required"),
    ):  # fmt: skip
        with pytest.raises(ValidationError) as err:
            InferenceRequest.model_validate(bad)
        assert expected in _message(err)


def test_response_and_metadata_tensors():
    rng = np.random.default_rng(2)
    probs = rng.random((3, 2)).ravel().tolist()
    response = InferenceResponse(
        model_name="m",
        model_version="1",
        outputs=[ResponseOutput(name="probabilities", shape=[3, 2], datatype="FP32", data=probs)],
    )
    assert response.model_dump(exclude_none=True)["outputs"][0]["data"] == probs
    with pytest.raises(ValidationError, match="holds 4 elements but data has 6"):
        ResponseOutput(name="p", shape=[2, 2], datatype="FP32", data=probs)
    assert TensorMetadata(name="images", datatype="FP32", shape=[-1, 3, -1, -1]).shape[0] == -1
    with pytest.raises(ValidationError):
        TensorMetadata(name="images", datatype="FP32", shape=[-2])
    with pytest.raises(ValidationError):
        TensorMetadata(name="images", datatype="FLOAT32", shape=[1])


def test_error_locations():
    assert format_location(("body", "graphs", 2, "smiles")) == "graphs[2].smiles"
    assert format_location(("inputs", 0, "data")) == "inputs[0].data"
    assert format_location(()) == ""
    errors = [{"loc": ("graphs", i), "msg": f"Value error, bad {i}"} for i in range(7)]
    message = validation_error_message(errors, limit=2)
    assert message == "graphs[0]: bad 0; graphs[1]: bad 1; ... and 5 more"
    assert common.ErrorResponse(error=message).model_dump(exclude_none=True) == {"error": message}
