"""The HTTP API in-process (FastAPI TestClient): every endpoint's answers and errors."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core.logging import JsonFormatter
from app.core.settings import Settings
from app.main import create_app
from app.serving.inference import InferenceFailed
from models.checkpoint import load_checkpoint
from models.molecule_features import featurize_smiles
from tests.app.model_repo import IMG, SOL_LABELS, VIS_LABELS, make_repository, png_bytes

MAX_BODY = 120_000
MAX_PIXELS = 200 * 200


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


def _settings(repo: Path, **overrides) -> Settings:
    return Settings(
        model_repository=repo,
        device="cpu",
        max_body_bytes=MAX_BODY,
        max_image_pixels=MAX_PIXELS,
        max_delay_ms=1.0,
        **overrides,
    )


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(repo))) as c:
        yield c


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def _classify(client: TestClient, data: bytes, content_type="image/png", **params):
    files = {"image": ("x.png", data, content_type)}
    return client.post("/v1/models/vis/classify", files=files, params=params)


def _vis_logits(repo: Path, images: torch.Tensor) -> torch.Tensor:
    model = load_checkpoint(repo / "vis" / "1").model
    with torch.inference_mode():
        return model(images)


# ---------------------------------------------------------------------------- /v1 models


def test_list_and_get_models(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert sorted(models) == ["mol", "solreg", "vis"]
    vis = models["vis"]
    assert (vis["kind"], vis["task"], vis["labels"], vis["ready"]) == (
        "image",
        "classification",
        VIS_LABELS,
        True,
    )
    assert vis["paths"] == ["parallel", "recurrent", "chunkwise"]
    assert vis["metrics"]["test"]["accuracy"] == 0.75
    assert len(vis["weights_sha256"]) == 64
    assert models["solreg"]["task"] == "regression"
    assert models["mol"]["paths"] == ["parallel", "recurrent"]
    one = client.get("/v1/models/mol").json()
    assert (one["name"], one["version"], one["versions"]) == ("mol", "1", ["1"])
    assert "'nope'" in _error(client.get("/v1/models/nope"), 404)
    assert "version 7" in _error(client.get("/v1/models/mol", params={"version": 7}), 404)


# ---------------------------------------------------------------------------- classify


def test_classify_multipart_matches_the_model(client: TestClient, repo: Path) -> None:
    data = png_bytes(IMG, IMG, seed=1)
    body = _classify(client, data, top_k=2).json()
    assert (body["model"], body["version"], body["path"], body["resize"]) == (
        "vis",
        "1",
        "parallel",
        "model",
    )
    assert body["image_size"] == body["original_size"] == {"height": IMG, "width": IMG}
    assert body["timings"]["total_ms"] >= body["timings"]["inference_ms"] > 0
    # expected: grayscale (Pillow luminance) copied to 3 channels, rescaled to [0, 1]
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255
    x = torch.from_numpy(gray)[None, None].expand(1, 3, IMG, IMG)
    probs = _vis_logits(repo, x).softmax(-1)[0]
    got = {p["index"]: p["probability"] for p in body["predictions"]}
    assert [p["label"] for p in body["predictions"]] == [
        VIS_LABELS[i] for i in probs.argsort(descending=True).tolist()
    ]
    for i in range(2):
        assert got[i] == pytest.approx(float(probs[i]), abs=1e-5)


def test_classify_raw_body_native_and_every_path(client: TestClient) -> None:
    data = png_bytes(18, 22, seed=2)
    answers = {}
    for path in ("parallel", "recurrent", "chunkwise"):
        r = client.post(
            "/v1/models/vis/classify",
            content=data,
            headers={"Content-Type": "image/png"},
            params={"resize": "native", "path": path, "top_k": 1},
        )
        body = r.json()
        assert body["path"] == path
        assert body["image_size"] == {"height": 20, "width": 24}
        assert body["original_size"] == {"height": 18, "width": 22}
        assert len(body["predictions"]) == 1
        answers[path] = body["predictions"][0]
    assert len({a["index"] for a in answers.values()}) == 1
    ref = answers["parallel"]["probability"]
    for a in answers.values():
        assert a["probability"] == pytest.approx(ref, abs=1e-4)


def test_top_k_over_the_classes_returns_them_all(client: TestClient) -> None:
    body = _classify(client, png_bytes(IMG, IMG, seed=6), top_k=3).json()
    assert sorted(p["label"] for p in body["predictions"]) == sorted(VIS_LABELS)


def test_classify_errors(client: TestClient) -> None:
    assert "'nope'" in _error(client.post("/v1/models/nope/classify", content=b"x"), 404)
    assert "corrupt" in _error(_classify(client, b"\x89PNG\r\n\x1a\n-broken-bytes"), 400)
    gif = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(gif, format="GIF")
    assert "GIF" in _error(_classify(client, gif.getvalue(), "image/*"), 415)
    assert "image/gif" in _error(_classify(client, png_bytes(16, 16, 3), "image/gif"), 415)
    r = client.post(
        "/v1/models/vis/classify", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert "text/plain" in _error(r, 415)
    assert "patch" in _error(_classify(client, png_bytes(2, 3, seed=4)), 422)
    big = png_bytes(220, 220, seed=5)  # random pixels barely compress: > MAX_BODY bytes
    assert len(big) > MAX_BODY
    assert "exceeds the limit" in _error(_classify(client, big), 413)
    flat = io.BytesIO()
    Image.new("L", (300, 300), 200).save(flat, format="PNG")  # tiny file, too many pixels
    assert "pixels" in _error(_classify(client, flat.getvalue()), 413)
    good = png_bytes(IMG, IMG, seed=6)
    assert "top_k" in _error(_classify(client, good, top_k=0), 422)
    assert "top_k" in _error(_classify(client, good, top_k=1001), 422)
    assert "path" in _error(_classify(client, good, path="sideways"), 422)
    assert "onnx" in _error(_classify(client, good, path="onnx"), 422)
    assert "resize" in _error(_classify(client, good, resize="stretch"), 422)
    r = client.post("/v1/models/vis/classify", files={"picture": ("x.png", good, "image/png")})
    assert "image" in _error(r, 422)
    r = client.post("/v1/models/mol/classify", content=good, headers={"Content-Type": "image/png"})
    assert "predict" in _error(r, 400)


# ---------------------------------------------------------------------------- predict


def test_predict_classification_and_regression(client: TestClient) -> None:
    graphs = [
        {"smiles": "CCO"},
        {"atoms": ["C", "C", {"element": "O"}], "bonds": [[0, 1, 1], [1, 2, 1]]},
        {"smiles": "c1ccccc1O"},
    ]
    body = client.post("/v1/models/mol/predict", json={"graphs": graphs}).json()
    assert (body["model"], body["task"], body["path"]) == ("mol", "classification", "parallel")
    assert [r["num_atoms"] for r in body["results"]] == [3, 3, 7]
    for result in body["results"]:
        probs = [p["probability"] for p in result["predictions"]]
        assert sorted(p["label"] for p in result["predictions"]) == sorted(SOL_LABELS)
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    # ethanol as SMILES and as atoms/bonds is the same molecule
    assert body["results"][0]["predictions"] == body["results"][1]["predictions"]
    recurrent = client.post(
        "/v1/models/mol/predict", json={"graphs": graphs}, params={"path": "recurrent"}
    ).json()
    assert recurrent["path"] == "recurrent"
    for a, b in zip(body["results"], recurrent["results"], strict=True):
        for p, q in zip(a["predictions"], b["predictions"], strict=True):
            assert p["probability"] == pytest.approx(q["probability"], abs=1e-4)
    reg = client.post("/v1/models/solreg/predict", json={"graphs": graphs[:1]}).json()
    assert reg["task"] == "regression"
    (value,) = reg["results"][0]["values"]
    assert value["name"] == "log_solubility"
    assert np.isfinite(value["value"])


def test_predict_errors(client: TestClient) -> None:
    bad = {"graphs": [{"smiles": "CCO"}, {"smiles": "C1CC(("}]}
    assert _error(client.post("/v1/models/mol/predict", json=bad), 422).startswith(
        "graphs[1].smiles"
    )
    assert "graphs" in _error(client.post("/v1/models/mol/predict", json={"graphs": []}), 422)
    both = {"graphs": [{"smiles": "C", "atoms": ["C"]}]}
    assert "graphs[0]" in _error(client.post("/v1/models/mol/predict", json=both), 422)
    r = client.post(
        "/v1/models/mol/predict", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _error(r, 422)
    many = {"graphs": [{"smiles": "C"}] * 65}
    assert "64" in _error(client.post("/v1/models/mol/predict", json=many), 422)
    assert "'nope'" in _error(client.post("/v1/models/nope/predict", json=bad), 404)
    assert "classify" in _error(
        client.post("/v1/models/vis/predict", json={"graphs": [{"smiles": "C"}]}), 400
    )
    assert "chunkwise" in _error(
        client.post(
            "/v1/models/mol/predict",
            json={"graphs": [{"smiles": "C"}]},
            params={"path": "chunkwise"},
        ),
        422,
    )


def test_a_bad_item_fails_alone(client: TestClient) -> None:
    runtime = client.app.state.server.runtimes[("mol", 1)]
    good = [featurize_smiles("CCO"), featurize_smiles("CCN")]
    wrong = featurize_smiles("CO")
    wrong = type(wrong)(wrong.x[:, :3], wrong.edge_index, wrong.edge_attr)
    results = runtime._run_batch("parallel", [good, [wrong], good[:1]])
    assert isinstance(results[1], InferenceFailed) and results[1].status_code == 422
    assert results[0][0].shape == (2, 3) and results[2][0].shape == (1, 3)
    torch.testing.assert_close(results[0][0][:1], results[2][0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- /v2


def test_v2_health_and_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "plstm"
    vis = client.get("/v2/models/vis").json()
    assert vis["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert [(o["name"], o["shape"]) for o in vis["outputs"]] == [
        ("probabilities", [-1, 2]),
        ("logits", [-1, 2]),
    ]
    mol = client.get("/v2/models/mol/versions/1").json()
    assert mol["inputs"] == [{"name": "smiles", "datatype": "BYTES", "shape": [-1]}]
    assert mol["versions"] == ["1"]
    reg = client.get("/v2/models/solreg").json()
    assert [(o["name"], o["shape"]) for o in reg["outputs"]] == [("values", [-1, 1])]
    assert client.get("/v2/models/vis/ready").json() == {"name": "vis", "ready": True}
    assert client.get("/v2/models/vis/versions/1/ready").status_code == 200
    _error(client.get("/v2/models/nope"), 404)
    _error(client.get("/v2/models/vis/versions/3"), 404)
    _error(client.get("/v2/models/vis/versions/x/ready"), 404)


def test_v2_infer_images_and_smiles(client: TestClient, repo: Path) -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, IMG, IMG, generator=gen)
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "images",
                "shape": [2, 3, IMG, IMG],
                "datatype": "FP32",
                "data": x.flatten().tolist(),
            }
        ],
        "outputs": [{"name": "logits"}],
    }
    body = client.post("/v2/models/vis/infer", json=request).json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("vis", "1", "r1")
    (out,) = body["outputs"]
    assert (out["name"], out["shape"], out["datatype"]) == ("logits", [2, 2], "FP32")
    expected = _vis_logits(repo, x)
    torch.testing.assert_close(
        torch.tensor(out["data"]).reshape(2, 2), expected, atol=1e-4, rtol=1e-4
    )
    smiles = {
        "inputs": [
            {"name": "smiles", "shape": [2], "datatype": "BYTES", "data": ["CCO", "c1ccccc1O"]}
        ]
    }
    body = client.post("/v2/models/mol/versions/1/infer", json=smiles).json()
    outs = {o["name"]: o for o in body["outputs"]}
    assert outs["probabilities"]["shape"] == outs["logits"]["shape"] == [2, 3]
    probs = torch.tensor(outs["probabilities"]["data"]).reshape(2, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    v1 = client.post("/v1/models/mol/predict", json={"graphs": [{"smiles": "CCO"}]}).json()
    p1 = {p["index"]: p["probability"] for p in v1["results"][0]["predictions"]}
    assert [p1[i] for i in range(3)] == pytest.approx(probs[0].tolist(), abs=1e-5)


def test_v2_infer_errors(client: TestClient) -> None:
    url = "/v2/models/mol/infer"
    smiles = {"name": "smiles", "shape": [1], "datatype": "BYTES", "data": ["CCO"]}
    _error(client.post("/v2/models/nope/infer", json={"inputs": [smiles]}), 404)
    assert "JSON" in _error(client.post(url, content=b"{oops"), 400)
    assert "images" in _error(client.post("/v2/models/vis/infer", json={"inputs": [smiles]}), 400)
    wrong_shape = {**smiles, "shape": [2]}
    assert "shape" in _error(client.post(url, json={"inputs": [wrong_shape]}), 400)
    bad_smiles = {**smiles, "data": ["C1CC(("]}
    assert "smiles[0]" in _error(client.post(url, json={"inputs": [bad_smiles]}), 400)
    unknown = {"inputs": [smiles], "outputs": [{"name": "colour"}]}
    assert "colour" in _error(client.post(url, json=unknown), 400)
    floats = {"name": "images", "shape": [1, 3, 5, 5], "datatype": "FP32", "data": [0.5] * 75}
    assert "patch" in _error(client.post("/v2/models/vis/infer", json={"inputs": [floats]}), 400)


# ---------------------------------------------------------------------------- ops


def test_metrics_and_healthz(client: TestClient) -> None:
    _classify(client, png_bytes(IMG, IMG, seed=8))
    text = client.get("/metrics").text
    assert re.search(
        r'plstm_requests_total\{endpoint="/v1/models/\{name\}/classify",model="vis",status="200"\} '
        r"[1-9]",
        text,
    )
    assert re.search(
        r'plstm_inference_duration_seconds_count\{model="vis",path="parallel"\} [1-9]', text
    )
    assert re.search(r'plstm_batch_size_count\{model="vis"\} [1-9]', text)
    assert 'plstm_model_info{architecture="plstm_vis_t",model="vis",version="1"} 1.0' in text
    assert 'plstm_model_eval_metric{metric="test/accuracy",model="vis"} 0.75' in text
    assert 'plstm_inflight_requests{model="vis"} 0.0' in text
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["ready"] is True
    assert health["models"]["vis/1"]["state"] == "READY"


def test_request_id_echo_and_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        r = client.get("/v1/models", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    lines = [json.loads(JsonFormatter().format(rec)) for rec in caplog.records]
    assert any(
        line["request_id"] == "abc-123" and line["path"] == "/v1/models" and line["status"] == 200
        for line in lines
    )
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    bad = client.get("/healthz", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", bad)


def test_api_key(repo: Path) -> None:
    with TestClient(create_app(_settings(repo, api_key="s3cret", warmup=False))) as c:
        assert "API key" in _error(c.get("/v1/models"), 401)
        _error(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        _error(c.post("/v2/models/mol/infer", json={}), 401)
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v2/models/vis", headers={"X-API-Key": "s3cret"}).status_code == 200
        for open_path in ("/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"):
            assert c.get(open_path).status_code == 200, open_path
