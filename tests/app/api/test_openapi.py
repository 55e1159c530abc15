"""The OpenAPI document declares what a generated client needs: request bodies (classify as
multipart and raw images, infer as JSON), bounded parameters, media types, every status with
the ``{"error": ...}`` body, and the API key only when one is configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app
from tests.app.model_repo import make_repository

CLASSIFY = "/v1/models/{name}/classify"
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


def _document(repo: Path, **settings: Any) -> dict[str, Any]:
    app = create_app(Settings(model_repository=repo, device="cpu", warmup=False, **settings))
    with TestClient(app) as client:
        return client.get("/openapi.json", headers={"X-API-Key": "k"}).json()


@pytest.fixture(scope="module")
def document(repo: Path) -> dict[str, Any]:
    return _document(repo)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_classify_takes_multipart_and_raw_images(document: dict[str, Any]) -> None:
    content = document["paths"][CLASSIFY]["post"]["requestBody"]["content"]
    multipart = content["multipart/form-data"]
    assert multipart["schema"]["required"] == ["image"]
    assert multipart["schema"]["properties"]["image"]["format"] == "binary"
    assert set(content) == {
        "multipart/form-data",
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/bmp",
        "application/octet-stream",
    }


@pytest.mark.parametrize(
    "path", ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]
)
def test_infer_takes_the_inference_request(document: dict[str, Any], path: str) -> None:
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"
    }
    assert "inputs" in document["components"]["schemas"]["InferenceRequest"]["required"]


def test_classify_parameters_are_bounded(document: dict[str, Any]) -> None:
    parameters = {p["name"]: p["schema"] for p in document["paths"][CLASSIFY]["post"]["parameters"]}
    top_k = parameters["top_k"]["anyOf"][0]
    assert (top_k["minimum"], top_k["maximum"]) == (1, 1000)
    assert parameters["version"]["anyOf"][0]["maximum"] == 2**31 - 1
    assert parameters["path"]["enum"] == ["auto", "parallel", "recurrent", "chunkwise", "onnx"]
    assert parameters["name"]["pattern"] and parameters["name"]["maxLength"] == 255


def test_predict_graphs_bounded_by_the_settings(repo: Path) -> None:
    document = _document(repo, max_graphs_per_request=7)
    graphs = document["components"]["schemas"]["PredictRequest"]["properties"]["graphs"]
    assert (graphs["minItems"], graphs["maxItems"]) == (1, 7)


def test_metrics_are_prometheus_text(document: dict[str, Any]) -> None:
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


@pytest.mark.parametrize("method", ["get", "head"])
def test_readiness_documents_its_503(document: dict[str, Any], method: str) -> None:
    responses = document["paths"]["/v2/health/ready"][method]["responses"]
    assert set(responses) == {"200", "503"}
    assert "Retry-After" in responses["503"]["headers"]


def test_every_error_answer_is_the_error_body(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and method != "head":
                schema = response["content"]["application/json"]["schema"]
                refs = [s["$ref"] for s in schema.get("anyOf", [schema])]
                assert ERROR_REF in refs, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_head_answers_have_no_body(document: dict[str, Any]) -> None:
    heads = [op for _, method, op in _operations(document) if method == "head"]
    assert len(heads) == 5
    for operation in heads:
        assert all("content" not in r for r in operation["responses"].values())


def test_no_key_no_security(document: dict[str, Any]) -> None:
    assert "securitySchemes" not in document["components"]
    assert all("security" not in op for _, _, op in _operations(document))


def test_the_key_and_its_401_when_one_is_set(repo: Path) -> None:
    document = _document(repo, api_key="k")
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    keyed = {path for path, _, op in _operations(document) if "security" in op}
    assert keyed == {p for p in document["paths"] if p.startswith(("/v1", "/v2/models"))} | {"/v2"}
    for path, _, operation in _operations(document):
        assert ("401" in operation["responses"]) == (path in keyed), path
