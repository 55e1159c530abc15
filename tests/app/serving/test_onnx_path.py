"""The server with PLSTM_ONNX: exports at load, path=onnx for images and graphs agreeing with
the torch paths, the auto rule, metrics, and an export failure leaving the torch paths."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import models.onnx.export
from app.core.settings import Settings
from app.main import create_app
from app.serving import backends
from app.serving.repository import READY, ModelRepository, attach_onnx
from models.molecule_features import featurize_smiles
from models.onnx.files import ONNX_FILE, read_sidecar
from tests.app.model_repo import IMG, make_repository, png_bytes

SMILES = ["CCO", "C", "[Na+].[Cl-]", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "c1ccccc1O"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    settings = Settings(model_repository=repo, device="cpu", onnx=True, max_delay_ms=1.0)
    with TestClient(create_app(settings)) as c:
        yield c


def _classify(client: TestClient, data: bytes, **params) -> dict:
    files = {"image": ("x.png", data, "image/png")}
    response = client.post("/v1/models/vis/classify", files=files, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _probabilities(predictions: list[dict]) -> dict[int, float]:
    return {p["index"]: p["probability"] for p in predictions}


def test_exported_at_load_and_offered(client: TestClient, repo: Path) -> None:
    for name in ("vis", "mol", "solreg"):
        model = client.get(f"/v1/models/{name}").json()
        assert "onnx" in model["paths"], model
        info = read_sidecar(repo / name / "1" / ONNX_FILE)
        assert info is not None and info["weights_sha256"] == model["weights_sha256"]
        assert model["onnx"]["available"] is True
        assert model["onnx"]["providers"] == ["CPUExecutionProvider"]
    vis = client.get("/v1/models/vis").json()["onnx"]
    assert vis["image_size"] == [IMG, IMG] and vis["opset"] == 18
    assert client.get("/v1/models/mol").json()["onnx"]["max_graph_nodes"] == 512


def test_classify_onnx_agrees_with_parallel(client: TestClient) -> None:
    image = png_bytes(IMG, IMG, seed=11)
    onnx = _classify(client, image, path="onnx", top_k=2)
    torch_ = _classify(client, image, path="parallel", top_k=2)
    assert onnx["path"] == "onnx" and torch_["path"] == "parallel"
    got, expected = _probabilities(onnx["predictions"]), _probabilities(torch_["predictions"])
    assert got.keys() == expected.keys()
    for i in got:
        assert got[i] == pytest.approx(expected[i], abs=1e-3)
    assert _classify(client, image, path="auto")["path"] == "onnx"


def test_auto_uses_onnx_only_at_the_exported_resolution(client: TestClient) -> None:
    other = png_bytes(20, 24, seed=12)  # native resize: 20x24, not the exported 16x16
    body = _classify(client, other, path="auto", resize="native")
    assert body["image_size"] == {"height": 20, "width": 24} and body["path"] == "parallel"
    assert _classify(client, other, path="auto", resize="model")["path"] == "onnx"
    files = {"image": ("x.png", other, "image/png")}
    response = client.post(
        "/v1/models/vis/classify", files=files, params={"path": "onnx", "resize": "native"}
    )
    assert response.status_code == 422
    assert f"takes {IMG}x{IMG} images only" in response.json()["error"]


def test_predict_onnx_agrees_with_parallel(client: TestClient) -> None:
    graphs = [{"smiles": s} for s in SMILES]
    answers = {}
    for path in ("onnx", "parallel"):
        response = client.post(
            "/v1/models/mol/predict", json={"graphs": graphs}, params={"path": path}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["path"] == path and len(body["results"]) == len(SMILES)
        answers[path] = [_probabilities(r["predictions"]) for r in body["results"]]
    for got, expected in zip(answers["onnx"], answers["parallel"], strict=True):
        assert got.keys() == expected.keys()
        for i in got:
            assert got[i] == pytest.approx(expected[i], abs=1e-3)
    values = {}
    for path in ("onnx", "recurrent"):
        body = client.post(
            "/v1/models/solreg/predict", json={"graphs": graphs}, params={"path": path}
        ).json()
        values[path] = [r["values"][0]["value"] for r in body["results"]]
    assert values["onnx"] == pytest.approx(values["recurrent"], abs=1e-3)
    auto = client.post("/v1/models/mol/predict", json={"graphs": graphs[:1]}).json()
    assert auto["path"] == "onnx"


def test_metrics_count_the_onnx_path(client: TestClient) -> None:
    _classify(client, png_bytes(IMG, IMG, seed=13), path="onnx")
    client.post(
        "/v1/models/mol/predict", json={"graphs": [{"smiles": "CC"}]}, params={"path": "onnx"}
    )
    text = client.get("/metrics").text
    for model in ("vis", "mol"):
        assert re.search(
            rf'plstm_inference_duration_seconds_count\{{model="{model}",path="onnx"\}} [1-9]', text
        )


def test_fresh_exports_are_reused_and_failures_keep_torch(
    repo: Path,
    client: TestClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(repo / "mol", root / "mol")  # with the export the server wrote
    repository = ModelRepository(root, warmup=False, onnx=True, onnx_max_graph_nodes=64)
    (entry,) = repository.load_all()
    assert entry.state == READY and entry.onnx_export["reused"] is True
    assert backends.model_paths(entry)[-1] == "onnx"

    def broken(*args, **kwargs):
        raise ValueError("exporter exploded")

    monkeypatch.setattr(models.onnx.export, "ensure_export", broken)
    with caplog.at_level(logging.WARNING, logger="app.serving.repository"):
        (entry,) = repository.load_all()
    assert any("exporter exploded" in r.getMessage() for r in caplog.records)
    assert entry.state == READY and entry.onnx_session is None
    assert entry.onnx_error == "ONNX unavailable: ValueError (see the server log)"
    assert entry.onnx_status() == {"available": False, "error": entry.onnx_error}
    assert "onnx" not in backends.model_paths(entry)
    assert backends.resolve_path(entry, "auto", 5) == "parallel"
    with pytest.raises(ValueError, match=r"no ONNX session .*ValueError \(see the server log"):
        backends.resolve_path(entry, "onnx", 5)


def test_read_only_checkpoint_exports_to_the_cache(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = models.onnx.export.ensure_export

    def read_only(directory, *, out=None, **kwargs):
        if out is None:
            raise PermissionError(f"{directory}: read-only file system")
        return real(directory, out=out, **kwargs)

    monkeypatch.setattr(models.onnx.export, "ensure_export", read_only)
    repository = ModelRepository(repo, warmup=False)
    repository.load_all()
    entry = repository.get("solreg")
    assert attach_onnx(entry, max_graph_nodes=64, cache_dir=tmp_path / "cache")
    assert entry.onnx_export["file"] == str(tmp_path / "cache" / "solreg" / "1" / ONNX_FILE)
    graphs = [featurize_smiles(s) for s in SMILES]
    torch.testing.assert_close(
        backends.run_graphs(entry, graphs, "onnx"),
        backends.run_graphs(entry, graphs, "parallel"),
        atol=1e-3,
        rtol=0,
    )
