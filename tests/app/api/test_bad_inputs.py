"""A corpus of bad requests against the in-process app: each answers its 4xx with
``{"error": ...}`` naming the problem, quickly, and the server stays live.

It holds every reproducer of issue 11's input limits: SMILES of 30,000 and 100,000 characters,
a carbon with a million hydrogen atoms, an atom charge of 2**31, a body nested 10,000 levels
deep, FP32 values of 3e38, NaN and infinity, 5,000-digit integers, and the other kinds of
wrong shapes, datatypes, bytes and parameters a client can send.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.api.body_decoding import json_nesting_depth
from app.core.settings import Settings
from app.main import create_app
from app.serving.decoder_pool import decoder_pool
from tests.app.model_repo import IMG, make_repository, png_bytes

CASE_SECONDS = 2.0
PREDICT = "/v1/models/mol/predict"
CLASSIFY = "/v1/models/vis/classify"
INFER_IMAGES = "/v2/models/vis/infer"
INFER_SMILES = "/v2/models/mol/infer"
JSON = {"content-type": "application/json"}
PNG = {"content-type": "image/png"}


@dataclass(frozen=True)
class Case:
    """One request and the answer it must get: ``status`` and a substring of the error."""

    id: str
    method: str
    path: str
    status: int
    error: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    params: dict[str, Any] = field(default_factory=dict)


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _graphs(*graphs: dict[str, Any]) -> bytes:
    return _json({"graphs": list(graphs)})


def _tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _infer(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return _json({"inputs": list(inputs), **extra})


def _images(data: Any, shape: list[int] | None = None, datatype: str = "FP32") -> bytes:
    return _infer(_tensor("images", datatype, shape or [1, 3, IMG, IMG], data))


def _raw_images(literal: bytes) -> bytes:
    """An FP32 image tensor of 3*IMG*IMG elements written as ``literal`` (NaN, huge ints...)."""
    data = b",".join([literal] * (3 * IMG * IMG))
    return (
        b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, %d, %d], '
        % (
            IMG,
            IMG,
        )
        + b'"data": ['
        + data
        + b"]}]}"
    )


def _smiles(*smiles: Any, shape: list[int] | None = None) -> bytes:
    return _infer(_tensor("smiles", "BYTES", shape or [len(smiles)], list(smiles)))


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (IMG, IMG), "white").save(buffer, format="GIF")
    return buffer.getvalue()


PIXELS = [0.5] * (3 * IMG * IMG)
DEEP = b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
HEAVY = "graphs[0].smiles: {n} heavy atoms exceed the limit of 500 per graph"
WITH_H = "atoms including hydrogens exceed the limit of 2500 per graph"
CARBON = "C"

CASES = [
    # ------------------------------------------------------------------ molecules: sizes
    Case("smiles-30k", "POST", PREDICT, 422,
         "graphs[0].smiles: 30000 characters exceed the limit of 16000 per SMILES",
         _graphs({"smiles": "C" * 30_000})),
    Case("smiles-100k", "POST", PREDICT, 422,
         "graphs[0].smiles: 100000 characters exceed the limit of 16000 per SMILES",
         _graphs({"smiles": "C" * 100_000})),
    Case("smiles-10k-atoms", "POST", PREDICT, 422, HEAVY.format(n=10_000),
         _graphs({"smiles": "C" * 10_000})),
    Case("smiles-501-atoms", "POST", PREDICT, 422, HEAVY.format(n=501),
         _graphs({"smiles": "C" * 501})),
    Case("smiles-bracket-h-atoms", "POST", PREDICT, 422, f"graphs[0].smiles: 2601 {WITH_H}",
         _graphs({"smiles": "C" + "([H])" * 2600})),
    Case("smiles-deuterium", "POST", PREDICT, 422, f"graphs[0].smiles: 2600 {WITH_H}",
         _graphs({"smiles": ".".join(["[2H]"] * 2600)})),
    Case("smiles-deuterium-nodes", "POST", PREDICT, 422,
         "graphs[0].smiles: 600 atoms would stay graph nodes (heavy atoms and hydrogens kept",
         _graphs({"smiles": ".".join(["[2H]"] * 600)})),
    Case("atoms-unbonded-h-nodes", "POST", PREDICT, 422,
         "graphs[0].atoms: 601 atoms would stay graph nodes",
         _graphs({"atoms": [CARBON] + [{"element": "H", "hydrogens": 0}] * 600})),
    Case("smiles-implicit-h", "POST", PREDICT, 422, f"graphs[0].smiles: 2501 {WITH_H}",
         _graphs({"smiles": ".".join(["C"] * 500 + ["[H]"])})),
    Case("smiles-in-second-graph", "POST", PREDICT, 422, HEAVY.format(n=600).replace("[0]", "[1]"),
         _graphs({"smiles": "CCO"}, {"smiles": "C" * 600})),
    Case("atoms-1m-hydrogens", "POST", PREDICT, 422, f"graphs[0].atoms: 1000001 {WITH_H}",
         _graphs({"atoms": [CARBON] + ["H"] * 1_000_000})),
    Case("atoms-2600-hydrogens", "POST", PREDICT, 422, f"graphs[0].atoms: 2601 {WITH_H}",
         _graphs({"atoms": [CARBON] + ["H"] * 2600, "bonds": []})),
    Case("atoms-implicit-h", "POST", PREDICT, 422, f"graphs[0].atoms: 3200 {WITH_H}",
         _graphs({"atoms": [CARBON] * 400 + ["H"] * 600})),
    Case("atoms-hydrogen-counts", "POST", PREDICT, 422, f"graphs[0].atoms: 4500 {WITH_H}",
         _graphs({"atoms": [{"element": "C", "hydrogens": 8}] * 500})),
    Case("atoms-501-heavy", "POST", PREDICT, 422,
         "graphs[0].atoms: 501 heavy atoms exceed the limit of 500 per graph",
         _graphs({"atoms": [CARBON] * 501})),
    Case("bonds-3001", "POST", PREDICT, 422,
         "graphs[0].bonds: 3001 bonds exceed the limit of 3000 per graph",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 1, 1]] * 3001})),
    Case("graphs-65", "POST", PREDICT, 422, "graphs: 65 graphs exceed the limit of 64",
         _graphs(*[{"smiles": "C"}] * 65)),
    Case("graphs-100k", "POST", PREDICT, 422, "graphs: 100000 graphs exceed the limit of 64",
         _graphs(*[{"smiles": "C"}] * 100_000)),
    Case("graphs-empty", "POST", PREDICT, 422, "graphs: List should have at least 1 item",
         _graphs()),
    # ------------------------------------------------------------------ molecules: numbers
    Case("charge-2**31", "POST", PREDICT, 422,
         "graphs[0].atoms[0].object.charge: Input should be less than or equal to 8",
         _graphs({"atoms": [{"element": "C", "charge": 2**31}]})),
    Case("charge-minus-2**31-1", "POST", PREDICT, 422,
         "graphs[0].atoms[0].object.charge: Input should be greater than or equal to -8",
         _graphs({"atoms": [{"element": "C", "charge": -(2**31) - 1}]})),
    Case("charge-float", "POST", PREDICT, 422, "graphs[0].atoms[0].object.charge",
         _graphs({"atoms": [{"element": "C", "charge": 1.5}]})),
    Case("charge-5000-digits", "POST", PREDICT, 422, "a number has too many digits",
         b'{"graphs": [{"atoms": [{"element": "C", "charge": ' + b"9" * 5000 + b"}]}]}"),
    Case("hydrogens-2**40", "POST", PREDICT, 422,
         "graphs[0].atoms[0].object.hydrogens: Input should be less than or equal to 8",
         _graphs({"atoms": [{"element": "C", "hydrogens": 2**40}]})),
    Case("hydrogens-negative", "POST", PREDICT, 422,
         "graphs[0].atoms[0].object.hydrogens: Input should be greater than or equal to 0",
         _graphs({"atoms": [{"element": "C", "hydrogens": -1}]})),
    Case("bond-index-2**70", "POST", PREDICT, 422,
         "graphs[0].bonds[0][1]: Input should be less than or equal to 2147483647",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 2**70, 1]]})),
    Case("bond-index-negative", "POST", PREDICT, 422,
         "graphs[0].bonds[0][0]: Input should be greater than or equal to 0",
         _graphs({"atoms": ["C", "C"], "bonds": [[-1, 1, 1]]})),
    Case("bond-index-out-of-range", "POST", PREDICT, 422,
         "graphs[0].bonds[0]: atom index 7 out of range (2 atoms)",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 7, 1]]})),
    Case("bond-order-1e308", "POST", PREDICT, 422,
         "graphs[0].bonds[0][2]: bond order must be one of 1, 2, 3, 1.5, got 1e+308",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 1, 1e308]]})),
    Case("bond-order-nan", "POST", PREDICT, 422, "bond order must be one of 1, 2, 3, 1.5, got nan",
         b'{"graphs": [{"atoms": ["C", "C"], "bonds": [[0, 1, NaN]]}]}'),
    Case("bond-order-bool", "POST", PREDICT, 422, "graphs[0].bonds[0][2]",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 1, True]]})),
    Case("bond-short", "POST", PREDICT, 422, "graphs[0].bonds[0]",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 1]]})),
    # ------------------------------------------------------------------ molecules: chemistry
    Case("element-unknown", "POST", PREDICT, 422,
         "graphs[0].atoms[1].element: unknown element 'Xx'", _graphs({"atoms": ["C", "Xx"]})),
    Case("element-10k-chars", "POST", PREDICT, 422,
         "graphs[0].atoms[0].symbol: String should have at most 3 characters",
         _graphs({"atoms": ["C" * 10_000]})),
    Case("atom-number", "POST", PREDICT, 422, "graphs[0].atoms[0].symbol: Input should be a valid",
         _graphs({"atoms": [6]})),
    Case("atom-unknown-key", "POST", PREDICT, 422, "mass: Extra inputs are not permitted",
         _graphs({"atoms": [{"element": "C", "mass": 12}]})),
    Case("bond-duplicate", "POST", PREDICT, 422, "duplicate bond between atoms 0 and 1",
         _graphs({"atoms": ["C", "C"], "bonds": [[0, 1, 1], [1, 0, 1]]})),
    Case("bond-self", "POST", PREDICT, 422, "graphs[0].bonds[0]: bond from atom 1 to itself",
         _graphs({"atoms": ["C", "C"], "bonds": [[1, 1, 1]]})),
    Case("atoms-pentavalent", "POST", PREDICT, 422, "graphs[0].atoms/bonds: not a valid molecule",
         _graphs({"atoms": ["C"] * 6, "bonds": [[0, j, 1] for j in range(1, 6)]})),
    Case("smiles-invalid", "POST", PREDICT, 422, "graphs[0].smiles: invalid SMILES 'C1CC'",
         _graphs({"smiles": "C1CC"})),
    Case("smiles-pentavalent", "POST", PREDICT, 422, "graphs[0].smiles: invalid SMILES",
         _graphs({"smiles": "C(C)(C)(C)(C)C"})),
    Case("smiles-empty", "POST", PREDICT, 422, "graphs[0].smiles: empty string",
         _graphs({"smiles": ""})),
    Case("smiles-nul", "POST", PREDICT, 422, "graphs[0].smiles: invalid SMILES",
         _graphs({"smiles": "CC\u0000O"})),
    Case("smiles-number", "POST", PREDICT, 422, "graphs[0].smiles: Input should be a valid string",
         _graphs({"smiles": 123})),
    Case("smiles-and-atoms", "POST", PREDICT, 422, "give either smiles or atoms/bonds, not both",
         _graphs({"smiles": "C", "atoms": ["C"]})),
    Case("graph-empty", "POST", PREDICT, 422, "give smiles or atoms (with bonds)", _graphs({})),
    # ------------------------------------------------------------------ predict: bodies
    Case("predict-deep", "POST", PREDICT, 400,
         "the body nests arrays/objects 10001 levels deep, more than the limit of 32",
         b'{"graphs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    Case("predict-not-json", "POST", PREDICT, 422, "the body is not valid JSON", b"{not json"),
    Case("predict-not-utf8", "POST", PREDICT, 422, "not UTF-8 text", b'{"graphs": "\xff\xfe"}'),
    Case("predict-array", "POST", PREDICT, 422, "Input should be a valid dictionary", b"[]"),
    Case("predict-empty-body", "POST", PREDICT, 422, "Field required", b""),
    Case("predict-text-plain", "POST", PREDICT, 422, "Input should be a valid dictionary",
         _graphs({"smiles": "C"}), {"content-type": "text/plain"}),
    Case("predict-unknown-model", "POST", "/v1/models/nope/predict", 404, "'nope'",
         _graphs({"smiles": "C"})),
    Case("predict-image-model", "POST", "/v1/models/vis/predict", 400, "use POST",
         _graphs({"smiles": "C"})),
    Case("predict-chunkwise", "POST", PREDICT, 422, "path: ", _graphs({"smiles": "C"}),
         params={"path": "chunkwise"}),
    # ------------------------------------------------------------------ infer: image values
    Case("infer-deep", "POST", INFER_IMAGES, 400,
         "the body nests arrays/objects 10001 levels deep, more than the limit of 32", DEEP),
    Case("infer-deep-data", "POST", INFER_IMAGES, 400, "40 levels deep",
         _images([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0.5]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])),
    Case("infer-3e38", "POST", INFER_IMAGES, 422,
         "input 'images': data[0] = 3e+38 is outside the model's input range [0, 1]",
         _images([3e38] * len(PIXELS))),
    Case("infer-negative", "POST", INFER_IMAGES, 422,
         "data[5] = -1 is outside the model's input range [0, 1]",
         _images([0.5] * 5 + [-1.0] * (len(PIXELS) - 5))),
    Case("infer-nan", "POST", INFER_IMAGES, 422,
         "inputs[0]: input 'images': data[0] = nan: expected a finite number for FP32",
         _raw_images(b"NaN")),
    Case("infer-infinity", "POST", INFER_IMAGES, 422, "data[0] = inf: expected a finite number",
         _raw_images(b"Infinity")),
    Case("infer-1e400", "POST", INFER_IMAGES, 422, "data[0] = -inf: expected a finite number",
         _raw_images(b"-1e400")),
    Case("infer-1e39", "POST", INFER_IMAGES, 422,
         "data[0] = 1e+39: out of the FP32 range [-3.402823e+38, 3.402823e+38]",
         _raw_images(b"1e39")),
    Case("infer-int-1e50", "POST", INFER_IMAGES, 422, "out of the FP32 range",
         _raw_images(b"1" + b"0" * 50)),
    Case("infer-int-5000-digits", "POST", INFER_IMAGES, 400,
         "the body is not valid JSON: a number has too many digits", _raw_images(b"7" * 5000)),
    Case("infer-uint8-300", "POST", INFER_IMAGES, 422,
         "data[0] = 300: out of the UINT8 range [0, 255]",
         _images([300] * len(PIXELS), [1, IMG, IMG, 3], "UINT8")),
    Case("infer-uint8-negative", "POST", INFER_IMAGES, 422, "out of the UINT8 range",
         _images([-1] * len(PIXELS), [1, IMG, IMG, 3], "UINT8")),
    # ------------------------------------------------------------------ infer: types, shapes
    Case("infer-uint8-float", "POST", INFER_IMAGES, 400, "data[0] = 1.5: expected an integer",
         _images([1.5] * len(PIXELS), datatype="UINT8")),
    Case("infer-string-pixels", "POST", INFER_IMAGES, 400, "data[0] = 'abc': expected a number",
         _images(["abc"] * len(PIXELS))),
    Case("infer-bool-images", "POST", INFER_IMAGES, 400, "image models take FP32 or UINT8",
         _images([True] * len(PIXELS), datatype="BOOL")),
    Case("infer-unknown-datatype", "POST", INFER_IMAGES, 400, "unknown datatype 'FLOAT'",
         _images(PIXELS, datatype="FLOAT")),
    Case("infer-shape-mismatch", "POST", INFER_IMAGES, 400,
         "shape [2, 3, 16, 16] holds 1536 elements but data has 768",
         _images(PIXELS, [2, 3, 16, 16])),
    Case("infer-shape-2**62", "POST", INFER_IMAGES, 400, "holds 4611686018427387904 elements",
         _images(PIXELS, [2**62])),
    Case("infer-shape-negative", "POST", INFER_IMAGES, 400,
         "inputs[0].shape[0]: Input should be greater than or equal to 0",
         _images(PIXELS, [-1, 3, 16, 16])),
    Case("infer-not-patch-multiple", "POST", INFER_IMAGES, 400,
         "images are 16x15 (HxW); both sides must be positive multiples of the patch size 4",
         _images([0.5] * (3 * 16 * 15), [1, 3, 16, 15])),
    Case("infer-no-channel-axis", "POST", INFER_IMAGES, 400, "has no axis of 3 channels",
         _images([0.5] * (4 * 16 * 16), [1, 4, 16, 16])),
    Case("infer-3d", "POST", INFER_IMAGES, 400, "expected [B,3,H,W] (NCHW) or [B,H,W,3]",
         _images(PIXELS, [3, 16, 16])),
    Case("infer-empty-batch", "POST", INFER_IMAGES, 400, "the batch is empty",
         _images([], [0, 3, 16, 16])),
    # ------------------------------------------------------------------ infer: the request
    Case("infer-wrong-input", "POST", INFER_IMAGES, 400, "takes one input 'images', got ['x']",
         _infer(_tensor("x", "FP32", [1], [0.5]))),
    Case("infer-two-inputs", "POST", INFER_IMAGES, 400, "takes one input 'images'",
         _infer(_tensor("images", "FP32", [1], [0.5]), _tensor("x", "FP32", [1], [0.5]))),
    Case("infer-no-inputs", "POST", INFER_IMAGES, 400, "inputs: List should have at least 1",
         _infer()),
    Case("infer-unknown-output", "POST", INFER_IMAGES, 400, "unknown output(s) ['colour']",
         _infer(_tensor("images", "FP32", [1, 3, 16, 16], PIXELS), outputs=[{"name": "colour"}])),
    Case("infer-binary-output", "POST", INFER_IMAGES, 400, "binary_data is not supported",
         _infer(_tensor("images", "FP32", [1, 3, 16, 16], PIXELS),
                outputs=[{"name": "logits", "parameters": {"binary_data": True}}])),
    Case("infer-binary-header", "POST", INFER_IMAGES, 400, "binary tensor data is not supported",
         _images(PIXELS), {**JSON, "inference-header-content-length": "10"}),
    Case("infer-bad-path", "POST", INFER_IMAGES, 400, "parameters.path must be one of",
         _infer(_tensor("images", "FP32", [1, 3, 16, 16], PIXELS), parameters={"path": "warp"})),
    Case("infer-not-json", "POST", INFER_IMAGES, 400, "the body is not valid JSON", b"{oops"),
    Case("infer-not-utf8", "POST", INFER_IMAGES, 400, "not UTF-8 text", b'{"inputs": "\xc3\x28"}'),
    Case("infer-array-body", "POST", INFER_IMAGES, 400, "Input should be a valid dictionary",
         b"[]"),
    Case("infer-unknown-model", "POST", "/v2/models/nope/infer", 404, "'nope'", _images(PIXELS)),
    Case("infer-bad-version", "POST", "/v2/models/vis/versions/0/infer", 404, "version '0'",
         _images(PIXELS)),
    # ------------------------------------------------------------------ infer: SMILES
    Case("infer-smiles-30k", "POST", INFER_SMILES, 400,
         "smiles[0]: 30000 characters exceed the limit of 16000 per SMILES",
         _smiles("C" * 30_000)),
    Case("infer-smiles-600-atoms", "POST", INFER_SMILES, 400,
         "smiles[1]: 600 heavy atoms exceed the limit of 500 per graph", _smiles("C", "C" * 600)),
    Case("infer-smiles-invalid", "POST", INFER_SMILES, 400, "smiles[0]: invalid SMILES 'C1CC'",
         _smiles("C1CC")),
    Case("infer-smiles-base64", "POST", INFER_SMILES, 400, "smiles[0]: invalid SMILES",
         _smiles("Q0NP!!==")),
    Case("infer-smiles-empty", "POST", INFER_SMILES, 400, "smiles[0]: empty string", _smiles("")),
    Case("infer-smiles-number", "POST", INFER_SMILES, 400, "data[0] = 3: expected a string",
         _smiles(3)),
    Case("infer-smiles-fp32", "POST", INFER_SMILES, 400, "graph models take BYTES",
         _infer(_tensor("smiles", "FP32", [1], [1.0]))),
    Case("infer-smiles-2x2", "POST", INFER_SMILES, 400, "expected [B] or [B, 1]",
         _smiles("C", "C", "C", "C", shape=[2, 2])),
    Case("infer-smiles-batch-65", "POST", INFER_SMILES, 400, "batch of 65 exceeds the limit of 64",
         _smiles(*["C"] * 65)),
    # ------------------------------------------------------------------ classify: bytes
    Case("classify-corrupt", "POST", CLASSIFY, 400, "corrupt image", b"\x89PNG\r\n\x1a\n-broken",
         PNG),
    Case("classify-empty", "POST", CLASSIFY, 400, "empty image", b"", PNG),
    Case("classify-gif", "POST", CLASSIFY, 415, "unsupported image format GIF", _gif(),
         {"content-type": "application/octet-stream"}),
    Case("classify-gif-type", "POST", CLASSIFY, 415, "unsupported content type 'image/gif'",
         _gif(), {"content-type": "image/gif"}),
    Case("classify-text", "POST", CLASSIFY, 415, "unsupported content type 'text/plain'", b"hi",
         {"content-type": "text/plain"}),
    Case("classify-too-small", "POST", CLASSIFY, 422, "smaller than one 4x4 patch",
         png_bytes(2, 2, seed=1), PNG),
    Case("classify-top-k-0", "POST", CLASSIFY, 422, "top_k", png_bytes(IMG, IMG, seed=2), PNG,
         {"top_k": 0}),
    Case("classify-top-k-over-max", "POST", CLASSIFY, 422, "top_k",
         png_bytes(IMG, IMG, seed=3), PNG, {"top_k": 1001}),
    Case("classify-bad-path", "POST", CLASSIFY, 422, "path", png_bytes(IMG, IMG, seed=4), PNG,
         {"path": "warp"}),
    Case("classify-bad-resize", "POST", CLASSIFY, 422, "resize", png_bytes(IMG, IMG, seed=5), PNG,
         {"resize": "stretch"}),
    Case("classify-multipart-no-image", "POST", CLASSIFY, 422, "multipart field 'image'",
         b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
         {"content-type": "multipart/form-data; boundary=b"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    repo = make_repository(tmp_path_factory.mktemp("model_repository"))
    settings = Settings(model_repository=repo, device="cpu")
    asyncio.run(decoder_pool().run(json_nesting_depth, b"[]"))  # start a decoder process
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_the_corpus_is_large_and_named_uniquely() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_its_error_quickly(client: TestClient, case: Case) -> None:
    start = time.perf_counter()
    response = client.request(
        case.method, case.path, content=case.body, headers=case.headers, params=case.params
    )
    seconds = time.perf_counter() - start
    assert response.status_code == case.status, response.text
    body = response.json()
    assert set(body) == {"error"} and case.error in body["error"], body
    assert seconds < CASE_SECONDS
    assert client.get("/v2/health/live").json() == {"live": True}


@pytest.mark.parametrize(
    ("model", "path", "body", "headers"),
    [
        ("vis", INFER_IMAGES, _images(PIXELS), JSON),
        ("vis", CLASSIFY, png_bytes(IMG, IMG, seed=9), PNG),
        ("mol", PREDICT, _graphs({"smiles": "CCO"}), JSON),
        ("mol", INFER_SMILES, _smiles("CCO"), JSON),
    ],
)
def test_non_finite_model_outputs_are_a_422(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    network = client.app.state.repository.get(model).model
    classes = 2 if model == "vis" else 3

    def nan_forward(x: torch.Tensor, *args: Any, num_graphs: int = 1, **kwargs: Any) -> Any:
        rows = x.shape[0] if model == "vis" else num_graphs
        return torch.full((rows, classes), float("nan"))

    monkeypatch.setattr(network, "forward", nan_forward)
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": f"model {model!r} gave non-finite outputs (NaN or infinity) for this input; "
        "its values are likely far outside what the model was trained on"
    }
