"""JSON bodies → validated requests (app.api.body_decoding): depth scan, JSON errors, statuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.api.body_decoding import (
    MAX_JSON_DEPTH,
    BodyError,
    decode_infer_request,
    decode_model,
    json_nesting_depth,
    load_json,
)
from app.api.schemas.v1 import MoleculeLimits, PredictRequest


def _depth_by_parsing(document: object) -> int:
    if isinstance(document, list):
        return 1 + max((_depth_by_parsing(x) for x in document), default=0)
    if isinstance(document, dict):
        return 1 + max((_depth_by_parsing(x) for x in document.values()), default=0)
    return 0


@pytest.mark.parametrize(
    "text",
    [
        "1",
        '"[[[{"',
        "[]",
        '{"a": [1, {"b": [[]]}]}',
        '["\\"[[", "\\\\", "[\\\\"]',  # escaped quotes and backslashes around brackets
        '["\\u005b\\u005b", {"k\\"]": "]]]"}]',
        '[[[["C1CC[NH3+]C1"]]], "}{"]',
        json.dumps({"inputs": [{"data": np.zeros((1, 2, 3, 4)).tolist()}]}),
    ],
)
def test_nesting_depth_ignores_brackets_in_strings(text: str) -> None:
    assert json_nesting_depth(text.encode()) == _depth_by_parsing(json.loads(text))


def test_deep_bodies_are_refused_before_parsing() -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BodyError) as err:
        load_json(body)
    assert err.value.status_code == 400
    assert str(err.value) == (
        f"the body nests arrays/objects 100001 levels deep, more than the limit of {MAX_JSON_DEPTH}"
    )
    assert load_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{oops", "the body is not valid JSON: Expecting property name"),
        (b'{"a": "\xff"}', "the body is not valid JSON: not UTF-8 text"),
        (b"[" + b"1" * 5000 + b"]", "the body is not valid JSON: a number has too many digits"),
    ],
)
def test_invalid_json(body: bytes, message: str) -> None:
    with pytest.raises(BodyError) as err:
        load_json(body, invalid_status=422)
    assert err.value.status_code == 422 and str(err.value).startswith(message)


def _infer_body(data: list, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    tensor = {"name": "x", "shape": shape or [len(data)], "datatype": datatype, "data": data}
    return json.dumps({"id": "7", "inputs": [tensor], "outputs": [{"name": "y"}]}).encode()


def test_infer_request_values_come_back_as_arrays() -> None:
    decoded = decode_infer_request(_infer_body([[0.5, 1], [2, 3.25]], shape=[2, 2]))
    assert (decoded.id, decoded.outputs) == ("7", ["y"])
    (tensor,) = decoded.inputs
    assert (tensor.name, tensor.shape, tensor.datatype) == ("x", [2, 2], "FP32")
    assert tensor.values.dtype == np.float32
    np.testing.assert_array_equal(tensor.values, [0.5, 1, 2, 3.25])
    ints = decode_infer_request(_infer_body([0, 2**64 - 1], "UINT64")).inputs[0].values
    assert ints.dtype == np.uint64 and ints.tolist() == [0, 2**64 - 1]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', 422,
         "inputs[0]: input 'x': data[0] = nan: expected a finite number for FP32"),
        (_infer_body([1.0, 1e39]), 422, "data[1] = 1e+39: out of the FP32 range"),
        (_infer_body([10**400]), 422, "data[0] = 1000"),
        (_infer_body([70000.0], "FP16"), 422, "out of the FP16 range"),
        (_infer_body([-129], "INT8"), 422, "data[0] = -129: out of the INT8 range [-128, 127]"),
        (_infer_body([2**64], "UINT64"), 422, "out of the UINT64 range"),
        (_infer_body([-1], "UINT64"), 422, "data[0] = -1: out of the UINT64 range"),
        (_infer_body(["a"]), 400, "data[0] = 'a': expected a number for FP32"),
        (_infer_body([1.5], "INT32"), 400, "expected an integer"),
        (_infer_body([1], "FP32", [2]), 400, "shape [2] holds 2 elements but data has 1"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                     "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode(),
         400, "output 'y': binary_data is not supported"),
    ],
)  # fmt: skip
def test_infer_request_errors(body: bytes, status: int, message: str) -> None:
    with pytest.raises(BodyError) as err:
        decode_infer_request(body)
    assert err.value.status_code == status
    assert message in str(err.value), str(err.value)


def test_model_bodies_check_list_lengths_with_the_limits() -> None:
    context = MoleculeLimits.derived(max_graphs=2, max_atoms=3).context()
    body = json.dumps({"graphs": [{"atoms": ["C"] + ["H"] * 15}]}).encode()
    with pytest.raises(BodyError) as err:
        decode_model(body, PredictRequest, context)
    assert err.value.status_code == 422
    assert str(err.value) == (
        "graphs[0].atoms: 16 atoms including hydrogens exceed the limit of 15 per graph"
    )
    request = decode_model(b'{"graphs": [{"smiles": "CCO"}]}', PredictRequest, context)
    assert isinstance(request, PredictRequest) and request.graphs[0].smiles == "CCO"
