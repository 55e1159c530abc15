"""The real ``plstm serve --workers 2 --engine process`` (``python -m app.cli serve``) on a free
loopback port: the answers of inline serving, requests of both workers in one batch, the same
overload answer, a clean drain on SIGTERM, 503 when the engine dies, no process left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import Settings
from app.engine.client import ENGINE_UNAVAILABLE
from app.main import create_app
from tests.app.model_repo import IMG, make_repository, mixed_requests, png_bytes

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0
WAIT_S = 20.0
PNG = {"content-type": "image/png"}
QUEUE = 20
INFO = (("architecture", "plstm_vis_t"), ("model", "vis"), ("version", "1"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
    return alive


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def _engine_pid(log_path: Path) -> int:
    """The engine's process id, as a worker logged it when it connected."""
    for record in _log_records(log_path):
        message = record.get("message", "")
        if message.startswith("connected to the inference engine (pid "):
            return int(message.removeprefix("connected to the inference engine (pid ")[:-1])
    raise AssertionError("no worker logged its engine connection")


@contextlib.contextmanager
def serving(repo: Path, log_path: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """The server with two workers and an engine, both workers connected; killed (with every
    process it started) if a test leaves it running."""
    port = _free_port()
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PLSTM_MAX_DELAY_MS": "300",  # long enough that concurrent requests meet
        "PLSTM_MAX_BATCH_SIZE": "32",
        "PLSTM_MAX_QUEUE_SIZE": str(QUEUE),
        "PLSTM_REQUEST_TIMEOUT_S": "20",
        "PLSTM_MAX_REQUEST_MEMORY_MB": "1024",
        # no calibration: path=auto and admission then do not depend on timings taken on a
        # busy machine (two processes timing the same model may choose different paths)
        "PLSTM_WARMUP": "false",
        **env,
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model-repository", str(repo), "--device", "cpu"]
    command += ["--workers", "2", "--engine", "process"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=log)
    started: set[int] = set()
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"server exited:\n{log_path.read_text()[-4000:]}"
            started.update(_descendants(proc.pid))
            messages = [r.get("message", "") for r in _log_records(log_path)]
            return sum(m.startswith("ready: 3 model version(s)") for m in messages) == 2

        _wait(ready, "both workers are connected to the engine", START_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in _alive(started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    with serving(repo, log_path) as (base, _):
        yield base


def _answer(response: httpx.Response) -> tuple[int, Any]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("timings", None)
    return response.status_code, body


def _assert_same(got: Any, expected: Any, where: str = "") -> None:
    """Equal, floats to 1e-6 (the engine is another process: its kernels may split work
    differently)."""
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-6), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            _assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, where


def test_answers_match_inline(server: str, repo: Path) -> None:
    settings = Settings(
        model_repository=repo,
        device="cpu",
        max_queue_size=QUEUE,
        max_request_memory_mb=1024,
        warmup=False,
    )
    statuses = set()
    with TestClient(create_app(settings)) as inline, httpx.Client(base_url=server) as served:
        for request in mixed_requests():
            expected = _answer(inline.request(**request))
            _assert_same(_answer(served.request(**request)), expected, str(request)[:80])
            statuses.add(expected[0])
    assert statuses == {200, 400, 404, 413, 415, 422}


async def _classify_many(base: str, count: int, spacing_s: float = 0.0) -> list[httpx.Response]:
    """``count`` concurrent requests, each on its own connection, started ``spacing_s`` apart
    (a burst of connections tends to be accepted by one worker; spaced, both take some)."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            await asyncio.sleep(i * spacing_s)
            image = png_bytes(IMG, IMG, i)
            return await client.post("/v1/models/vis/classify", content=image, headers=PNG)

        return await asyncio.gather(*(one(i) for i in range(count)))


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition; fails on a family exposed twice."""
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), f"duplicate metric families in {sorted(names)}"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_queue_full_answer_and_shared_metrics(server: str) -> None:
    classify = (("endpoint", "/v1/models/{name}/classify"), ("model", "vis"))
    answered = {
        code: ("plstm_requests_total", (*classify, ("status", str(code)))) for code in (200, 503)
    }
    before = _samples(httpx.get(f"{server}/metrics").text)
    # spaced a little, so that both workers accept some of the connections
    responses = asyncio.run(_classify_many(server, QUEUE + 4, spacing_s=0.005))
    busy = [r for r in responses if r.status_code == 503]
    assert busy, "the queue never filled up"
    full = f"server busy: queue of model 'vis' is full ({QUEUE})"
    assert {r.json()["error"] for r in busy} == {full}
    assert {r.headers["retry-after"] for r in busy} == {"1"}
    assert all(r.status_code == 200 for r in responses if r.status_code != 503)
    vis = (("model", "vis"),)
    scrapes = [_samples(httpx.get(f"{server}/metrics").text) for _ in range(4)]
    for samples in scrapes:  # whichever worker answers: the engine's batches
        assert samples[("plstm_batch_size_count", vis)] < samples[("plstm_batch_size_sum", vis)]
        assert samples[("plstm_batch_size_sum", vis)] == scrapes[0][("plstm_batch_size_sum", vis)]
        assert ("plstm_model_info", INFO) in samples  # the worker's own families too
        # and those summed over both workers: every scrape counts every answer
        for code, key in answered.items():
            got = samples.get(key, 0.0) - before.get(key, 0.0)
            assert got == sum(r.status_code == code for r in responses), (code, got)
        assert samples[("plstm_inflight_requests", vis)] == 0.0


def test_sigterm_drains_one_batch_of_both_workers(repo: Path, tmp_path: Path) -> None:
    count = 16
    log_path = tmp_path / "server.log"
    # a batch of `count` then waits up to 2 s: the test sees them all queued before SIGTERM
    with serving(repo, log_path, PLSTM_MAX_DELAY_MS="2000") as (base, proc):
        started = _descendants(proc.pid)
        engine_pid = _engine_pid(log_path)
        assert engine_pid in started and len(started) >= 3

        def depth() -> float:
            samples = _samples(httpx.get(f"{base}/metrics").text)
            return samples.get(("plstm_queue_depth", (("model", "vis"),)), 0.0)

        async def main() -> list[httpx.Response]:
            requests = asyncio.create_task(_classify_many(base, count, spacing_s=0.05))
            await asyncio.to_thread(_wait, lambda: depth() == count, "all requests queued")
            proc.send_signal(signal.SIGTERM)
            return await requests

        responses = asyncio.run(main())
        assert [r.status_code for r in responses] == [200] * count
        assert proc.wait(timeout=WAIT_S) == 0
    records = _log_records(log_path)
    served = [r["worker_requests"] for r in records if "worker_requests" in r]
    assert len(served) == 2
    assert sum(served) == count and min(served) > 0, "one worker got every request"
    messages = [r["message"] for r in records]
    assert messages.count("drained") == 2  # both workers
    assert messages.index("inference engine drained") > max(
        i for i, m in enumerate(messages) if m == "drained"
    )
    _wait(lambda: not _alive(started), "every process is gone", 5.0)


def test_engine_death_answers_503_and_exits_1(repo: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    with serving(repo, log_path) as (base, proc):
        started = _descendants(proc.pid)
        engine_pid = _engine_pid(log_path)
        os.kill(engine_pid, signal.SIGKILL)

        def both_unready() -> bool:  # fresh connections: either worker may answer
            return all(httpx.get(f"{base}/v2/health/ready").status_code == 503 for _ in range(6))

        _wait(both_unready, "readiness is false")
        for seed in range(6):
            image = png_bytes(IMG, IMG, seed)
            r = httpx.post(f"{base}/v1/models/vis/classify", content=image, headers=PNG)
            assert (r.status_code, r.json()) == (503, {"error": ENGINE_UNAVAILABLE})
        health = httpx.get(f"{base}/healthz").json()
        assert not health["ready"] and not health["engine"]["connected"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 1
    assert any("inference engine exited" in r["message"] for r in _log_records(log_path))
    _wait(lambda: not _alive(started), "every process is gone", 5.0)


def test_engine_start_failure_stops_the_server(repo: Path, tmp_path: Path) -> None:
    """No CUDA here: the engine fails to load, so ``plstm serve`` stops with status 1."""
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(_free_port()), "--model-repository", str(repo), "--device", "cuda"]
    command += ["--workers", "2", "--engine", "process"]
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log
        )
    try:
        assert proc.wait(timeout=START_TIMEOUT_S) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    messages = [r.get("message", "") for r in _log_records(log_path)]
    assert any("failed to start" in m for m in messages)
    assert "CUDA is not available" in log_path.read_text()
