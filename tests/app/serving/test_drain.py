"""SIGTERM with requests in flight: none is lost, new requests meanwhile get 503 with
``Connection: close`` (not a refused connection), then the server exits 0. In one process
(``plstm serve``) and with two workers and the engine process (``--workers 2``); and the drain
middleware alone, in process, with the model held by a :class:`Gate`."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from app.serving.draining import SHUTTING_DOWN
from tests.app.model_repo import IMG, make_repository, png_bytes
from tests.app.real_server import server_process
from tests.app.started_app import Gate, started_app

IN_FLIGHT = 8
DURING_DRAIN = 4
HOLD_MS = "4000"
"""The batcher's max delay: requests stay in flight this long, so SIGTERM finds them there."""
DRAINING = "draining: new requests get 503"
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


async def _classify(client: httpx.AsyncClient, seed: int) -> httpx.Response:
    image = png_bytes(IMG, IMG, seed)
    return await client.post("/v1/models/vis/classify", content=image, headers=PNG)


async def _fresh(base: str, seed: int) -> httpx.Response:
    """One request on a connection of its own."""
    async with httpx.AsyncClient(base_url=base, timeout=20) as client:
        return await _classify(client, seed)


async def _until_draining(log: Path, workers: int) -> None:
    """Until every worker logged that it drains (uvicorn's supervisor passes the signal on
    within half a second)."""
    deadline = time.monotonic() + 10
    while log.read_text().count(DRAINING) < workers:
        assert time.monotonic() < deadline, "the workers did not start draining"
        await asyncio.sleep(0.02)


async def _sigterm_while_in_flight(
    base: str, proc: Any, log: Path, workers: int
) -> tuple[list[Any], list[Any]]:
    """(answers of the requests in flight at SIGTERM, answers of those sent during the drain)."""
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        in_flight = [asyncio.create_task(_classify(client, i)) for i in range(IN_FLIGHT)]
        await asyncio.sleep(0.5)  # all sent, held in the batcher for HOLD_MS
        proc.send_signal(signal.SIGTERM)
        await _until_draining(log, workers)
        during = await asyncio.gather(*(_fresh(base, 100 + i) for i in range(DURING_DRAIN)))
        assert not any(task.done() for task in in_flight), "the drain came too late to test"
        return list(await asyncio.gather(*in_flight)), list(during)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers-and-engine"])
def test_sigterm_loses_nothing_and_answers_503_meanwhile(
    repo: Path, tmp_path: Path, workers: int
) -> None:
    log = tmp_path / "server.log"
    env = {"PLSTM_MAX_DELAY_MS": HOLD_MS, "PLSTM_WARMUP": "false"}
    with server_process(repo, log, env, workers=workers) as (base, proc):
        finished, refused = asyncio.run(_sigterm_while_in_flight(base, proc, log, workers))
        assert proc.wait(timeout=30) == 0
    assert [r.status_code for r in finished] == [200] * IN_FLIGHT
    assert [(r.status_code, r.json()) for r in refused] == [
        (503, {"error": SHUTTING_DOWN})
    ] * DURING_DRAIN
    assert {(r.headers["connection"], r.headers["retry-after"]) for r in refused} == {
        ("close", "1")
    }
    assert '"message": "drained"' in log.read_text()


def test_drain_refuses_new_requests_while_one_runs(repo: Path) -> None:
    settings = Settings(model_repository=repo, device="cpu", warmup=False, max_delay_ms=0.0)
    app = create_app(settings)

    async def main() -> None:
        async with started_app(app) as (client, _):
            gate = Gate(app.state.server.runtimes[("vis", 1)].entry.model)
            running = asyncio.create_task(_classify(client, 1))
            await gate.wait_entered()
            app.state.http_drain.start()
            refused = await client.get("/v2/health/live")
            assert (refused.status_code, refused.json()) == (503, {"error": SHUTTING_DOWN})
            assert refused.headers["connection"] == "close"
            assert not await app.state.http_drain.wait_idle(0.05)  # the request still runs
            gate.release.set()
            assert (await running).status_code == 200
            started = time.perf_counter()
            assert await app.state.http_drain.wait_idle(5.0)
            assert time.perf_counter() - started < 1.0

    asyncio.run(main())
