"""``/v2/health/live`` keeps answering while the heaviest legal requests are decoded.

In-process on one event loop (:func:`tests.app.started_app.started_app`): the heavy request
runs as a task while the test polls liveness. Both requests hold the GIL for well over a
second in one call when decoded in the server process (a 32 MiB JSON body, the largest these
settings allow: ``json.loads``; a 729-atom cage molecule, the largest they allow: RDKit's ring
perception), so the 1 s bound fails if either went back onto the event loop or into a worker
thread; in the decoder processes liveness answers in milliseconds. The bound is that loose
for a busy 2-core CI machine; ``bench/bench_liveness.py`` measures the real figures with the
shipped models and default settings.

The models' forwards are replaced by stubs that answer at once: on that cage the tiny test
model would compute for seconds, and this test is about decoding, not inference.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from app.core.settings import Settings
from app.main import create_app
from tests.app.model_repo import IMG, make_repository
from tests.app.started_app import started_app

LIVE_BOUND_S = 1.0
POLL_S = 0.02
MAX_BODY = 32 * 1024 * 1024
CAGE = (9, 9, 9)  # sulfur atoms on a grid, 6 bonds each inside: 729 atoms, 1944 bonds


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


def _settings(repo: Path) -> Settings:
    return Settings(
        model_repository=repo,
        device="cpu",
        warmup=False,
        max_body_bytes=MAX_BODY,
        max_queue_size=4096,  # a 32 MiB body holds some 2,000 images of the tiny model
        max_atoms=CAGE[0] * CAGE[1] * CAGE[2],
    )


def cage_molecule(nx: int, ny: int, nz: int) -> dict[str, list]:
    """A sulfur grid as atoms / bonds: a valid molecule whose ring perception is slow."""
    index = {(i, j, k): n for n, (i, j, k) in enumerate(np.ndindex(nx, ny, nz))}
    bonds = []
    for (i, j, k), a in index.items():
        for step in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            b = index.get((i + step[0], j + step[1], k + step[2]))
            if b is not None:
                bonds.append([a, b, 1])
    return {"atoms": ["S"] * len(index), "bonds": bonds}


def largest_infer_body(max_bytes: int) -> bytes:
    """An FP32 image batch of the tiny model, as many full-precision values as fit."""
    per_image = json.dumps(np.random.default_rng(0).random(3 * IMG * IMG).tolist())
    images = int(0.98 * max_bytes / (len(per_image) + 1))
    values = np.random.default_rng(1).random(images * 3 * IMG * IMG)
    tensor = {"name": "images", "shape": [images, 3, IMG, IMG], "datatype": "FP32"}
    body = json.dumps({"inputs": [{**tensor, "data": values.tolist()}]}).encode()
    assert max_bytes * 0.9 < len(body) <= max_bytes
    return body


def _instant_graph_forward(*args: object, num_graphs: int, **kwargs: object) -> torch.Tensor:
    """Outputs ``[G,3]`` (the test graph model's 3 classes) without computing anything."""
    return torch.zeros(num_graphs, 3)


def _instant_image_forward(images: torch.Tensor) -> torch.Tensor:
    """Logits ``[B,2]`` (the test image model's 2 classes) without computing anything."""
    return torch.zeros(images.shape[0], 2)


async def _liveness_during(
    client: httpx.AsyncClient, request: Awaitable[httpx.Response]
) -> tuple[httpx.Response, list[float]]:
    """The heavy request's answer, and the latency of a liveness probe due every ``POLL_S``:
    from when it was due (a blocked event loop delays its start too) to its answer."""
    task = asyncio.ensure_future(request)
    latencies = []
    due = time.perf_counter()
    while not task.done():
        live = await client.get("/v2/health/live")
        latencies.append(time.perf_counter() - due)
        assert live.json() == {"live": True}
        due = time.perf_counter() + POLL_S
        await asyncio.sleep(POLL_S)
    return await task, latencies


@pytest.mark.parametrize("kind", ["molecule", "infer-body"])
def test_liveness_answers_during_the_heaviest_legal_request(repo: Path, kind: str) -> None:
    if kind == "molecule":
        url, body = "/v1/models/mol/predict", json.dumps({"graphs": [cage_molecule(*CAGE)]})
    else:
        url, body = "/v2/models/vis/infer", largest_infer_body(MAX_BODY)

    async def run() -> tuple[httpx.Response, list[float]]:
        app = create_app(_settings(repo))
        async with started_app(app) as (client, _):
            repository = app.state.repository
            repository.get("mol").model.forward = _instant_graph_forward
            repository.get("vis").model.forward = _instant_image_forward
            heavy = client.post(url, content=body, headers={"content-type": "application/json"})
            return await _liveness_during(client, heavy)

    response, latencies = asyncio.run(run())
    assert response.status_code == 200, response.text
    assert len(latencies) >= 5  # the request took a while, and liveness was asked meanwhile
    assert max(latencies) < LIVE_BOUND_S, sorted(latencies)[-5:]
