"""Process mode in one event loop: an engine server (:func:`app.engine.server.open_engine`) and
worker apps (``create_app(engine_socket=...)``, lifespan entered by hand, requests through
``httpx.ASGITransport``), checked against an inline app on the same repository: the same
answers, shared batches across workers, the same overload answers, engine loss and drain.

Overload and drain hold the model's forward behind a :class:`Gate`, so which request runs,
waits or is refused is decided by the test, never by timing.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.core.errors import ApiError
from app.core.settings import Settings
from app.engine.client import ENGINE_UNAVAILABLE, EngineClient
from app.engine.protocol import CLASSIFY, HELLO, encode, read_message
from app.engine.server import EngineServer, open_engine
from app.main import create_app
from app.serving.repository import build_repository
from models.molecule_features import featurize_smiles
from tests.app.model_repo import IMG, make_repository, mixed_requests, png_bytes
from tests.app.started_app import WAIT_S, Gate, started_app

CLASSIFY_URL = "/v1/models/vis/classify"
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


@pytest.fixture
def socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="plstm-test-")  # short: Unix socket paths are limited
    yield str(Path(directory) / "engine.sock")
    shutil.rmtree(directory, ignore_errors=True)


def _settings(repo: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "device": "cpu",
        "warmup": False,
        "max_delay_ms": 50.0,
        "max_request_memory_mb": 1024,
    }
    return Settings(model_repository=repo, **{**values, **overrides})


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def engine(settings: Settings, path: str) -> AsyncIterator[EngineServer]:
    repository = build_repository(settings)
    await asyncio.to_thread(repository.load_all)
    server = await open_engine(repository, settings, path)
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def app_client(
    settings: Settings, engine_socket: str | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, asyncio.Event]]:
    """The app started (in process mode: connected), a client, and the event that starts its
    shutdown."""
    app = create_app(settings, engine_socket=engine_socket)
    async with started_app(app) as (client, stop):
        if engine_socket is not None:
            await _until(lambda: app.state.engine.connected, "the worker connected")
        yield app, client, stop


def _image(seed: int, height: int = IMG, width: int = IMG) -> bytes:
    return png_bytes(height, width, seed=seed)


def _answer(response: httpx.Response) -> tuple[int, Any, str | None]:
    """Status, JSON body without timings (they differ run to run), Retry-After."""
    body = response.json()
    if isinstance(body, dict):
        body.pop("timings", None)
    return response.status_code, body, response.headers.get("retry-after")


def test_same_answers_as_inline(repo: Path, socket_path: str) -> None:
    settings = _settings(repo)
    wrong = featurize_smiles("CO")
    wrong = type(wrong)(wrong.x[:, :3], wrong.edge_index, wrong.edge_attr)

    async def failure(app: FastAPI) -> tuple[int, str]:
        with pytest.raises(ApiError) as info:
            await app.state.server.runtimes[("mol", 1)].predict([wrong], "parallel")
        return info.value.status_code, info.value.message

    async def main() -> None:
        async with (
            engine(settings, socket_path),
            app_client(settings) as (inline_app, inline, _),
            app_client(settings, socket_path) as (worker_app, worker, _),
        ):
            statuses = set()
            for request in mixed_requests():
                expected = _answer(await inline.request(**request))
                assert _answer(await worker.request(**request)) == expected, request
                statuses.add(expected[0])
            assert statuses == {200, 400, 404, 413, 415, 422}
            assert await failure(worker_app) == await failure(inline_app)
            assert (await failure(inline_app))[0] == 422
            health = (await worker.get("/healthz")).json()
            assert health["ready"] and health["engine"]["connected"]
            assert health["models"] == (await inline.get("/healthz")).json()["models"]

    asyncio.run(main())


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition; fails on a family exposed twice."""
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), f"duplicate metric families in {sorted(names)}"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_two_workers_share_one_batcher(repo: Path, socket_path: str) -> None:
    # the batch closes at 12 items; the long delay would only matter if they did not meet
    settings = _settings(repo, max_batch_size=12, max_delay_ms=5000.0)
    vis = (("model", "vis"),)
    ok = (("endpoint", "/v1/models/{name}/classify"), ("model", "vis"), ("status", "200"))

    async def main() -> None:
        async with (
            engine(settings, socket_path),
            app_client(settings, socket_path) as (_, first, _),
            app_client(settings, socket_path) as (_, second, _),
        ):
            headers = {"content-type": "image/png"}
            responses = await asyncio.gather(
                *(
                    client.post(CLASSIFY_URL, content=_image(seed), headers=headers)
                    for seed in range(6)
                    for client in (first, second)
                )
            )
            assert [r.status_code for r in responses] == [200] * 12
            for client in (first, second):
                samples = _samples((await client.get("/metrics")).text)
                assert samples[("plstm_batch_size_count", vis)] == 1
                assert samples[("plstm_batch_size_sum", vis)] == 12
                assert samples[("plstm_queue_duration_seconds_count", vis)] == 12
                assert samples[("plstm_requests_total", ok)] == 6  # its own requests only
                families = {name for name, _ in samples}
                assert "plstm_model_info" in families and "plstm_inflight_requests" in families

    asyncio.run(main())


async def _post_image(client: httpx.AsyncClient, seed: int) -> httpx.Response:
    return await client.post(CLASSIFY_URL, content=_image(seed), headers=PNG)


async def _overload(client: httpx.AsyncClient, runtime: Any) -> list:
    """One request running behind the gate, two queued, one refused; then all three time out
    before the gate opens. Their answers, in order."""
    gate = Gate(runtime.entry.model)

    def send(seed: int) -> asyncio.Task:
        return asyncio.create_task(_post_image(client, seed))

    def depth() -> int:
        return runtime.batcher.queue_depth

    try:
        running = send(0)
        await gate.wait_entered()
        queued = [send(1), send(2)]
        await _until(lambda: depth() == 2, "two requests queued")
        refused = await send(3)
        answers = [_answer(refused)]
        answers += [_answer(r) for r in await asyncio.gather(running, *queued)]
    finally:
        gate.release.set()
    return answers


def test_overload_answers_match_inline(repo: Path, socket_path: str) -> None:
    settings = _settings(repo, max_queue_size=2, request_timeout_s=1.0, max_delay_ms=1.0)

    async def main() -> tuple[list, list]:
        async with app_client(settings) as (app, client, _):
            runtime = app.state.server.runtimes[("vis", 1)]
            inline = await _overload(client, runtime)
        async with (
            engine(settings, socket_path) as server,
            app_client(settings, socket_path) as (
                _,
                client,
                _,
            ),
        ):
            runtime = server.runtimes[("vis", 1)]
            remote = await _overload(client, runtime)
        return inline, remote

    inline, remote = asyncio.run(main())
    assert remote == inline
    busy = (503, {"error": "server busy: queue of model 'vis' is full (2)"}, "1")
    late = (504, {"error": "request timed out: no result within 1 s"}, None)
    dropped = (
        "server busy: model 'vis' is overloaded: the request could not be answered within its "
        "deadline of 1 s and was dropped from the queue unrun"
    )
    shed = (503, {"error": dropped}, "1")
    assert inline == [busy, late, shed, shed]


def test_engine_loss_answers_503_and_reconnects(repo: Path, socket_path: str) -> None:
    settings = _settings(repo)
    unavailable = (503, {"error": ENGINE_UNAVAILABLE}, "1")

    async def main() -> None:
        async with (
            engine(settings, socket_path) as server,
            app_client(settings, socket_path) as (
                app,
                client,
                _,
            ),
        ):
            assert (await _post_image(client, 1)).status_code == 200
            await server.close()
            await _until(lambda: not app.state.engine.connected, "the worker saw the loss")
            assert _answer(await _post_image(client, 1)) == unavailable
            assert _answer(await client.get("/v2/health/ready"))[0] == 503
            assert _answer(await client.get("/v2/models/vis/ready"))[0] == 503
            health = (await client.get("/healthz")).json()
            assert not health["ready"] and health["engine"]["connected"] is False
            assert (await client.get("/v1/models")).status_code == 200  # metadata stays
            text = (await client.get("/metrics")).text
            assert "plstm_requests_total" in text and "plstm_batch_size" not in text
            async with engine(settings, socket_path):
                await _until(lambda: app.state.engine.connected, "the worker reconnected")
                assert (await client.get("/v2/health/ready")).status_code == 200
                assert (await _post_image(client, 2)).status_code == 200

    asyncio.run(main())


def test_requests_in_flight_when_the_engine_goes_get_503(socket_path: str) -> None:
    """A stand-in engine that says hello, takes one request and closes the connection."""

    async def main() -> None:
        got_request = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(encode(HELLO, 0, {"pid": 1, "entries": []}))
            await read_message(reader)
            got_request.set()
            writer.close()

        server = await asyncio.start_unix_server(serve, path=socket_path)
        client = EngineClient(socket_path)

        async def on_hello(meta: dict) -> None:
            assert meta == {"pid": 1, "entries": []}

        client.start(on_hello)
        try:
            await _until(lambda: client.connected, "connected")
            image = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
            request = client.request(CLASSIFY, {"m": "x", "v": 1, "p": "parallel"}, [image], 30)
            with pytest.raises(ApiError) as info:
                await asyncio.wait_for(request, WAIT_S)
            assert got_request.is_set()
            assert (info.value.status_code, info.value.message) == (503, ENGINE_UNAVAILABLE)
        finally:
            await client.close()
            server.close()

    asyncio.run(main())


def test_worker_drain_finishes_in_flight_requests(repo: Path, socket_path: str) -> None:
    settings = _settings(repo, max_delay_ms=1.0)

    async def main() -> None:
        async with (
            engine(settings, socket_path) as server,
            app_client(settings, socket_path) as (
                app,
                client,
                stop,
            ),
        ):
            gate = Gate(server.runtimes[("vis", 1)].entry.model)
            try:
                running = asyncio.create_task(_post_image(client, 1))
                await gate.wait_entered()
                stop.set()  # the worker's lifespan exits: it drains
                await _until(lambda: app.state.server.draining, "draining")
                refused = await _post_image(client, 2)
                expected = {"error": "the server is shutting down"}
                assert (refused.status_code, refused.json()) == (503, expected)
                await asyncio.sleep(0.05)
                assert not running.done()  # the drain waits for it
            finally:
                gate.release.set()
            assert (await running).status_code == 200

    asyncio.run(main())


def test_a_worker_stops_waiting_for_a_dead_engine(repo: Path, socket_path: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    async def main() -> None:
        app = create_app(_settings(repo), engine_socket=socket_path, engine_pid=gone.pid)
        async with asyncio.timeout(WAIT_S), app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                r = await client.get("/v2/health/ready")
                assert r.status_code == 503 and "starting" in r.json()["error"]

    asyncio.run(main())
