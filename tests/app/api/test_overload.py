"""Overload answers through the HTTP API: a full queue (503 + Retry-After), a request past its
timeout (504) and one shed unrun behind it (503 + Retry-After), new requests while the server
drains (503), a request whose client disconnects (dropped unrun), and the X-Request-Timeout
header.

The app runs in-process on one event loop (its lifespan entered by hand, requests through
``httpx.ASGITransport``) with the model's forward wrapped by a :class:`Gate` that holds every
call until the test releases it, so which request is running, queued or refused is decided by
the test, never by timing.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI

from app.core.settings import Settings
from app.main import create_app
from app.serving.images import ImageSpec, load_image
from models.checkpoint import load_checkpoint
from tests.app.model_repo import IMG, make_repository, png_bytes
from tests.app.started_app import WAIT_S, Gate, started_app

CLASSIFY = "/v1/models/vis/classify"
ENDPOINT = "/v1/models/{name}/classify"
TIMEOUT_S = 1.0
"""Request timeout of the 504 test: long enough for one forward of the tiny model on a busy
CI machine."""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding only the ``vis`` image model of :func:`make_repository`."""
    full = make_repository(tmp_path_factory.mktemp("full_repository"))
    root = tmp_path_factory.mktemp("vis_repository")
    shutil.copytree(full / "vis", root / "vis")
    return root


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient
    gate: Gate
    stop: asyncio.Event
    """Set it to start the shutdown (lifespan exit: the batchers drain)."""


@asynccontextmanager
async def serving(repo: Path, **settings: Any) -> AsyncIterator[Served]:
    """The app on ``repo`` with ``settings``, started, its ``vis`` forward behind a gate; on
    exit the gate opens and the app shuts down."""
    app = create_app(Settings(model_repository=repo, device="cpu", warmup=False, **settings))
    async with started_app(app) as (client, stop):
        gate = Gate(app.state.repository.get("vis").model)
        try:
            yield Served(app, client, gate, stop)
        finally:
            gate.release.set()  # before the shutdown, which waits for the held batches


def _image(seed: int) -> bytes:
    return png_bytes(IMG, IMG, seed=seed)


async def _classify(served: Served, seed: int) -> httpx.Response:
    return await served.client.post(
        CLASSIFY, content=_image(seed), headers={"content-type": "image/png"}
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.002)


def _queue_depth(served: Served) -> int:
    return served.app.state.server.runtimes[("vis", 1)].batcher.queue_depth


def _requests(served: Served, status: int) -> float:
    value = served.app.state.metrics.registry.get_sample_value(
        "plstm_requests_total", {"model": "vis", "endpoint": ENDPOINT, "status": str(status)}
    )
    return 0.0 if value is None else value


def _assert_correct(repo: Path, response: httpx.Response, seed: int) -> None:
    """A 200 whose probabilities are the model's own for image ``seed``."""
    assert response.status_code == 200, response.text
    checkpoint = load_checkpoint(repo / "vis" / "1")
    image = load_image(_image(seed), ImageSpec.from_checkpoint(checkpoint)).tensor
    with torch.inference_mode():
        expected = checkpoint.model(image[None])[0].softmax(-1)
    predictions = response.json()["predictions"]
    assert sorted(p["index"] for p in predictions) == list(range(expected.numel()))
    for p in predictions:
        assert p["probability"] == pytest.approx(expected[p["index"]].item(), abs=1e-5)


def _assert_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"]
    return body["error"]


def test_full_queue_answers_503_and_queued_requests_still_succeed(repo: Path) -> None:
    async def main() -> None:
        async with serving(
            repo, max_batch_size=1, max_delay_ms=0, max_queue_size=2, request_timeout_s=30
        ) as served:
            running = asyncio.create_task(_classify(served, seed=1))
            await served.gate.wait_entered()  # request 1 runs (and holds the worker)
            queued = [asyncio.create_task(_classify(served, seed=s)) for s in (2, 3)]
            await _until(lambda: _queue_depth(served) == 2, "two requests wait")
            refused = await _classify(served, seed=4)
            _assert_error(refused, 503, "server busy", "queue", "full")
            assert refused.headers["retry-after"] == "1"
            assert not running.done() and not any(t.done() for t in queued)
            served.gate.release.set()
            responses = await asyncio.gather(running, *queued)
            for seed, response in zip((1, 2, 3), responses, strict=True):
                _assert_correct(repo, response, seed)
            assert served.gate.batch_sizes == [1, 1, 1]  # the refused request never ran
            assert _queue_depth(served) == 0
            assert (_requests(served, 200), _requests(served, 503)) == (3, 1)
            _assert_correct(repo, await _classify(served, seed=5), 5)  # room again

    asyncio.run(main())


def test_request_past_its_timeout_answers_504_the_one_queued_behind_it_503(repo: Path) -> None:
    async def main() -> None:
        async with serving(
            repo, max_batch_size=1, max_delay_ms=0, max_queue_size=4, request_timeout_s=TIMEOUT_S
        ) as served:
            running = asyncio.create_task(_classify(served, seed=1))
            await served.gate.wait_entered()  # request 1 runs and is held past its timeout
            queued = asyncio.create_task(_classify(served, seed=2))  # waits behind it
            await _until(lambda: _queue_depth(served) == 1, "request 2 waits")
            start = time.perf_counter()
            late, shed = await asyncio.gather(running, queued)
            _assert_error(late, 504, "timed out", f"{TIMEOUT_S:g} s")
            assert "retry-after" not in late.headers
            _assert_error(shed, 503, "server busy", f"within its deadline of {TIMEOUT_S:g} s")
            assert int(shed.headers["retry-after"]) >= 1  # request 2 was shed, never run
            assert time.perf_counter() - start < TIMEOUT_S + 5.0
            assert _queue_depth(served) == 0  # the timed-out waiter left the queue
            served.gate.release.set()
            await served.gate.wait_finished()  # request 1's abandoned batch is done
            _assert_correct(repo, await _classify(served, seed=3), 3)
            assert served.gate.batch_sizes == [1, 1]  # request 2 never ran
            assert [_requests(served, s) for s in (504, 503, 200)] == [1, 1, 1]

    asyncio.run(main())


def test_requests_during_drain_answer_503_while_in_flight_ones_finish(repo: Path) -> None:
    async def main() -> None:
        async with serving(
            repo, max_batch_size=1, max_delay_ms=0, max_queue_size=4, request_timeout_s=30
        ) as served:
            in_flight = asyncio.create_task(_classify(served, seed=1))
            await served.gate.wait_entered()
            served.stop.set()  # shutdown starts: the batcher drains, waiting for request 1
            await _until(lambda: served.app.state.server.draining, "the server drains")
            refused = await _classify(served, seed=2)
            _assert_error(refused, 503, "shutting down")
            assert refused.headers["retry-after"] == "1"
            ready = await served.client.get("/v2/health/ready")
            assert ready.status_code == 503
            assert not in_flight.done()
            served.gate.release.set()
            _assert_correct(repo, await in_flight, 1)
            assert served.gate.batch_sizes == [1]
            assert (_requests(served, 200), _requests(served, 503)) == (1, 1)

    asyncio.run(main())


def test_a_request_whose_client_disconnects_is_dropped_before_it_runs(repo: Path) -> None:
    async def main() -> None:
        async with serving(
            repo, max_batch_size=1, max_delay_ms=0, max_queue_size=4, request_timeout_s=30
        ) as served:
            running = asyncio.create_task(_classify(served, seed=1))
            await served.gate.wait_entered()
            gone = asyncio.Event()
            sent: list[dict[str, Any]] = []
            body = _image(2)

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": CLASSIFY,
                "raw_path": CLASSIFY.encode(),
                "query_string": b"",
                "headers": [(b"content-type", b"image/png"), (b"host", b"test")],
                "client": ("127.0.0.1", 1),
                "server": ("test", 80),
            }
            body_sent = False

            async def receive_once() -> dict[str, Any]:
                nonlocal body_sent
                if not body_sent:
                    body_sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            request = asyncio.create_task(served.app(scope, receive_once, send))
            await _until(lambda: _queue_depth(served) == 1, "the second request waits")
            gone.set()  # its client closes the connection
            await asyncio.wait_for(request, WAIT_S)
            assert _queue_depth(served) == 0
            served.gate.release.set()
            _assert_correct(repo, await running, 1)
            assert served.gate.batch_sizes == [1]  # the second request never ran
            assert sent[0]["status"] == 499
            assert _requests(served, 499) == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    ("value", "expected"), [("0.3", "no result within 0.3 s"), ("999", "no result within 1 s")]
)
def test_x_request_timeout_shortens_the_deadline_up_to_the_setting(
    repo: Path, value: str, expected: str
) -> None:
    async def main() -> None:
        async with serving(
            repo, max_batch_size=1, max_delay_ms=0, max_queue_size=4, request_timeout_s=TIMEOUT_S
        ) as served:
            response = await served.client.post(
                CLASSIFY,
                content=_image(1),
                headers={"content-type": "image/png", "x-request-timeout": value},
            )  # held by the gate past its deadline
            _assert_error(response, 504, expected)

    asyncio.run(main())


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_x_request_timeout_must_be_a_positive_number(repo: Path, value: str) -> None:
    async def main() -> None:
        async with serving(repo) as served:
            response = await served.client.post(
                CLASSIFY,
                content=_image(1),
                headers={"content-type": "image/png", "x-request-timeout": value},
            )
            _assert_error(response, 400, "X-Request-Timeout: must be a positive number of seconds")
            assert served.gate.batch_sizes == []

    asyncio.run(main())
