"""A request's inference path (``path=auto|parallel|...``) is resolved once: by the route
(within the cost limits), which passes the explicit path down to the batcher and the model call
(:func:`app.serving.backends.forward_images` / ``forward_graphs``), inline and through the
engine process (here in the same event loop) alike."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from app.serving import backends
from tests.app.engine.test_engine_inprocess import _settings, app_client, engine
from tests.app.model_repo import IMG, make_repository, png_bytes

PNG = {"content-type": "image/png"}
IMAGES = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
REQUESTS: dict[str, dict[str, Any]] = {
    "classify-auto": {
        "method": "POST",
        "url": "/v1/models/vis/classify",
        "content": png_bytes(IMG, IMG, 1),
        "headers": PNG,
    },
    "classify-recurrent": {
        "method": "POST",
        "url": "/v1/models/vis/classify",
        "params": {"path": "recurrent"},
        "content": png_bytes(IMG, IMG, 2),
        "headers": PNG,
    },
    "predict-auto": {
        "method": "POST",
        "url": "/v1/models/mol/predict",
        "json": {"graphs": [{"smiles": "CCO"}, {"smiles": "c1ccccc1O"}]},
    },
    "v2-infer-images": {
        "method": "POST",
        "url": "/v2/models/vis/infer",
        "json": {
            "inputs": [
                {
                    "name": "images",
                    "shape": [1, 3, IMG, IMG],
                    "datatype": "FP32",
                    "data": IMAGES.flatten().tolist(),
                }
            ]
        },
    },
    "v2-infer-smiles": {
        "method": "POST",
        "url": "/v2/models/mol/infer",
        "json": {
            "inputs": [{"name": "smiles", "shape": [1], "datatype": "BYTES", "data": ["CCN"]}]
        },
    },
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


@pytest.fixture
def socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="plstm-test-")  # short: Unix socket paths are limited
    yield str(Path(directory) / "engine.sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``path`` argument of every call of :func:`app.serving.backends.resolve_path`."""
    calls: list[str] = []
    resolve = backends.resolve_path

    def counted(entry: Any, path: str, *args: Any, **kwargs: Any) -> str:
        calls.append(path)
        return resolve(entry, path, *args, **kwargs)

    monkeypatch.setattr(backends, "resolve_path", counted)
    return calls


async def _resolutions_of(
    repo: Path, socket: str | None, request: dict[str, Any], calls: list[str]
) -> list[str]:
    settings = _settings(repo)
    if socket is None:
        async with app_client(settings) as (_, client, _stop):
            calls.clear()  # start-up may resolve paths (warm-up, calibration)
            response = await client.request(**request)
    else:
        async with engine(settings, socket), app_client(settings, socket) as (_, client, _stop):
            calls.clear()
            response = await client.request(**request)
    assert response.status_code == 200, response.text
    return list(calls)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_inline_request_resolves_its_path_once(
    repo: Path, resolutions: list[str], name: str
) -> None:
    calls = asyncio.run(_resolutions_of(repo, None, REQUESTS[name], resolutions))
    assert len(calls) == 1, calls


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_engine_request_resolves_its_path_once(
    repo: Path, resolutions: list[str], socket_path: str, name: str
) -> None:
    calls = asyncio.run(_resolutions_of(repo, socket_path, REQUESTS[name], resolutions))
    assert len(calls) == 1, calls
