"""The real server process (``python -m app.cli serve``) on a free loopback port: readiness,
dynamic batching of concurrent requests, the stock Triton HTTP client, and a clean exit on
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.app.model_repo import IMG, make_repository, png_bytes

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 45.0
CONCURRENT = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen, Any]]:
    repo = make_repository(tmp_path_factory.mktemp("model_repository"))
    port = _free_port()
    env = {
        **os.environ,
        "PLSTM_MAX_DELAY_MS": "300",  # long enough that the concurrent requests meet
        "PLSTM_MAX_BATCH_SIZE": "32",
        "PLSTM_REQUEST_TIMEOUT_S": "20",
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path_factory.mktemp("logs") / "server.log").open("w+")
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model-repository", str(repo), "--device", "cpu"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            ready = httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200
        if ready:
            break
        time.sleep(0.2)
    if not ready:
        proc.kill()
        proc.wait(10)
        log.seek(0)
        pytest.fail(f"server did not become ready:\n{log.read()[-4000:]}")
    yield base, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


async def _classify_many(base: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/models/vis/classify",
                    files={"image": ("x.png", png_bytes(IMG, IMG, seed=i), "image/png")},
                )
                for i in range(CONCURRENT)
            )
        )


def test_endpoints_and_batching(server: tuple[str, subprocess.Popen, Any]) -> None:
    base, _, _ = server
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    models = httpx.get(f"{base}/v1/models").json()["models"]
    assert sorted(m["name"] for m in models) == ["mol", "solreg", "vis"]
    r = httpx.post(f"{base}/v1/models/mol/predict", json={"graphs": [{"smiles": "C1CC(("}]})
    assert r.status_code == 422 and r.json()["error"].startswith("graphs[0].smiles")
    r = httpx.get(f"{base}/v1/models/nope", headers={"X-Request-ID": "srv-1"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "srv-1"
    responses = asyncio.run(_classify_many(base))
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    for r in responses:
        probs = [p["probability"] for p in r.json()["predictions"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    text = httpx.get(f"{base}/metrics").text
    count = float(re.search(r'plstm_batch_size_count\{model="vis"\} (\S+)', text).group(1))
    total = float(re.search(r'plstm_batch_size_sum\{model="vis"\} (\S+)', text).group(1))
    single = float(
        re.search(r'plstm_batch_size_bucket\{le="1.0",model="vis"\} (\S+)', text).group(1)
    )
    assert total >= CONCURRENT
    assert single < count, "every batch held one request: nothing was batched"
    assert total > count


def test_stock_triton_client(server: tuple[str, subprocess.Popen, Any]) -> None:
    httpclient = pytest.importorskip(
        "tritonclient.http", reason="tritonclient[http] is not installed"
    )
    base, _, _ = server
    client = httpclient.InferenceServerClient(base.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("mol")
        meta = client.get_model_metadata("vis")
        assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1]
        smiles = httpclient.InferInput("smiles", [2], "BYTES")
        smiles.set_data_from_numpy(
            np.array([b"CCO", b"c1ccccc1O"], dtype=object), binary_data=False
        )
        out = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer("mol", [smiles], outputs=[out])
        probs = result.as_numpy("probabilities")
        assert probs.shape == (2, 3)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        gen = np.random.default_rng(3)
        images = httpclient.InferInput("images", [1, 3, IMG, IMG], "FP32")
        images.set_data_from_numpy(
            gen.random((1, 3, IMG, IMG), dtype=np.float32), binary_data=False
        )
        logits = httpclient.InferRequestedOutput("logits", binary_data=False)
        assert client.infer("vis", [images], outputs=[logits]).as_numpy("logits").shape == (1, 2)
    finally:
        client.close()


def test_sigterm_exits_cleanly(server: tuple[str, subprocess.Popen, Any]) -> None:
    base, proc, log = server
    # its own request: under xdist the tests sharing this server may run in other workers
    r = httpx.get(f"{base}/v1/models/nope", headers={"X-Request-ID": "srv-term"})
    assert r.status_code == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    log.flush()
    log.seek(0)
    lines = log.read()
    assert '"message": "drained"' in lines
    assert '"request_id": "srv-term"' in lines
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/v2/health/live", timeout=2)
