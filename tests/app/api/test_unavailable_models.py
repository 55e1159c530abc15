"""Model versions that cannot serve are reported the same way everywhere: 503 without
Retry-After naming the reason class (describe, metadata, readiness, inference), listed with
their state in ``/v1/models`` and ``/healthz``; no file path or hash in any body; the same
answers from a worker of the engine process."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app
from models.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from tests.app.engine.test_engine_inprocess import app_client, engine
from tests.app.model_repo import IMG, make_repository, png_bytes
from tests.app.started_app import started_app

PNG = {"content-type": "image/png"}
SMILES = {"inputs": [{"name": "smiles", "shape": [1], "datatype": "BYTES", "data": ["CCO"]}]}
SHA256 = re.compile(r"[0-9a-f]{64}")


def _tamper(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repository(tmp_path_factory.mktemp("model_repository"))
    shutil.copytree(root / "vis" / "1", root / "corrupt" / "1")
    _tamper(root / "corrupt" / "1" / WEIGHTS_FILE)
    shutil.copytree(root / "mol" / "1", root / "mol" / "2")
    _tamper(root / "mol" / "2" / WEIGHTS_FILE)
    shutil.copytree(root / "mol" / "1", root / "badconfig" / "1")
    (root / "badconfig" / "1" / CONFIG_FILE).write_text("{broken")
    (root / "empty").mkdir()
    return root


def _settings(repo: Path) -> Settings:
    return Settings(model_repository=repo, device="cpu", warmup=False, max_delay_ms=0.0)


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(repo))) as c:
        yield c


def _unavailable(reason: str, name: str, version: int | None) -> dict[str, str]:
    what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
    return {"error": f"{what} is unavailable: {reason}", "reason": reason}


CORRUPT = _unavailable("checkpoint_corrupt", "corrupt", 1)
MOL_2 = _unavailable("checkpoint_corrupt", "mol", 2)
REFUSED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"method": "GET", "url": "/v1/models/corrupt"}, CORRUPT),
    ({"method": "GET", "url": "/v1/models/mol", "params": {"version": 2}}, MOL_2),
    (
        {"method": "GET", "url": "/v1/models/badconfig"},
        _unavailable("config_invalid", "badconfig", 1),
    ),
    ({"method": "GET", "url": "/v1/models/empty"}, _unavailable("no_versions", "empty", None)),
    ({"method": "GET", "url": "/v2/models/corrupt"}, CORRUPT),
    ({"method": "GET", "url": "/v2/models/mol/versions/2"}, MOL_2),
    ({"method": "GET", "url": "/v2/models/empty"}, _unavailable("no_versions", "empty", None)),
    (
        {"method": "GET", "url": "/v2/models/corrupt/ready"},
        {"name": "corrupt", "ready": False, "reason": "checkpoint_corrupt"},
    ),
    (
        {"method": "GET", "url": "/v2/models/mol/versions/2/ready"},
        {"name": "mol", "ready": False, "reason": "checkpoint_corrupt"},
    ),
    (
        {"method": "GET", "url": "/v2/models/empty/ready"},
        {"name": "empty", "ready": False, "reason": "no_versions"},
    ),
    (
        {
            "method": "POST",
            "url": "/v1/models/corrupt/classify",
            "content": png_bytes(IMG, IMG, 1),
            "headers": PNG,
        },
        CORRUPT,
    ),
    (
        {
            "method": "POST",
            "url": "/v1/models/badconfig/predict",
            "json": {"graphs": [{"smiles": "CCO"}]},
        },
        _unavailable("config_invalid", "badconfig", 1),
    ),
    ({"method": "POST", "url": "/v2/models/mol/versions/2/infer", "json": SMILES}, MOL_2),
    (
        {"method": "POST", "url": "/v2/models/empty/infer", "json": SMILES},
        _unavailable("no_versions", "empty", None),
    ),
]


@pytest.mark.parametrize(("request_", "body"), REFUSED, ids=lambda r: str(r.get("url", "")))
def test_refused_for_good_with_its_reason(
    client: TestClient, request_: dict[str, Any], body: dict[str, Any]
) -> None:
    response = client.request(**request_)
    assert (response.status_code, response.json()) == (503, body)
    assert "retry-after" not in response.headers


def test_the_ready_version_still_serves(client: TestClient) -> None:
    assert client.get("/v1/models/mol").json()["version"] == "1"
    assert client.post("/v2/models/mol/infer", json=SMILES).status_code == 200


def test_listed_with_their_state(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert sorted(models) == ["badconfig", "corrupt", "empty", "mol", "solreg", "vis"]
    states = {name: (m["version"], m["state"], m["reason"]) for name, m in models.items()}
    assert states["corrupt"] == ("1", "UNAVAILABLE", "checkpoint_corrupt")
    assert states["badconfig"] == ("1", "UNAVAILABLE", "config_invalid")
    assert states["empty"] == (None, "UNAVAILABLE", "no_versions")
    assert states["mol"] == ("1", "READY", None)
    assert models["mol"]["versions"] == ["1", "2"]
    assert models["corrupt"]["weights_sha256"] is None and models["corrupt"]["ready"] is False


def test_healthz_lists_every_version(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["models"] == {
        "badconfig/1": {"state": "UNAVAILABLE", "reason": "config_invalid"},
        "corrupt/1": {"state": "UNAVAILABLE", "reason": "checkpoint_corrupt"},
        "empty": {"state": "UNAVAILABLE", "reason": "no_versions"},
        "mol/1": {"state": "READY", "reason": None},
        "mol/2": {"state": "UNAVAILABLE", "reason": "checkpoint_corrupt"},
        "solreg/1": {"state": "READY", "reason": None},
        "vis/1": {"state": "READY", "reason": None},
    }
    assert health["engine"] == "inline"


@pytest.mark.parametrize(
    "url", ["/healthz", "/v1/models/corrupt", "/v2/models/badconfig", "/v2/models/mol/versions/2"]
)
def test_no_path_or_hash_in_bodies(client: TestClient, repo: Path, url: str) -> None:
    text = client.get(url).text
    assert str(repo) not in text and "/tmp" not in text
    assert not SHA256.search(text)


def test_a_worker_of_the_engine_answers_the_same(repo: Path) -> None:
    settings = _settings(repo)
    requests = [r for r, _ in REFUSED] + [
        {"method": "GET", "url": "/v1/models"},
        {"method": "GET", "url": "/healthz"},
    ]
    directory = tempfile.mkdtemp(prefix="plstm-test-")  # short: Unix socket paths are limited

    async def answers(client: Any) -> list[tuple[int, Any, str | None]]:
        out = []
        for request in requests:
            response = await client.request(**request)
            body = response.json()
            if request["url"] == "/healthz":
                body = body["models"]
            out.append((response.status_code, body, response.headers.get("retry-after")))
        return out

    async def main() -> None:
        socket_path = str(Path(directory) / "engine.sock")
        async with (
            engine(settings, socket_path),
            app_client(settings, socket_path) as (_, worker, _),
        ):
            inline = create_app(settings)
            async with started_app(inline) as (inline_client, _):
                assert await answers(worker) == await answers(inline_client)

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
