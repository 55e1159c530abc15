"""One thread runs every model of a process on the CPU (app.serving.model_thread)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import torch

from app.core.metrics import Metrics
from app.core.settings import Settings
from app.serving.batching import Batcher
from app.serving.inference import build_runtimes
from app.serving.model_thread import model_executor, on_model_thread, run_on_model_thread
from app.serving.repository import ModelRepository
from tests.app.model_repo import make_repository


def _thread_name(key: object, items: list[int]) -> list[str]:
    return [threading.current_thread().name] * len(items)


def _thread(key: object, items: list[int]) -> list[threading.Thread]:
    return [threading.current_thread()] * len(items)


def test_batchers_given_the_model_executor_share_its_thread() -> None:
    async def run() -> tuple[set[threading.Thread], set[threading.Thread]]:
        shared = [Batcher(_thread, 4, 0, 16, executor=model_executor()) for _ in range(2)]
        own = [Batcher(_thread, 4, 0, 16) for _ in range(2)]
        threads = [await b.submit(i, "k") for i, b in enumerate(shared + own)]
        for b in shared + own:
            await b.drain()
        return set(threads[:2]), set(threads[2:])

    shared, own = asyncio.run(run())
    assert len(shared) == 1 and next(iter(shared)).name.startswith("model")
    assert len(own) == 2 and not own & shared


def test_draining_a_batcher_leaves_the_shared_thread_running() -> None:
    async def run() -> str:
        first = Batcher(_thread_name, 4, 0, 16, executor=model_executor())
        await first.submit(1, "k")
        await first.drain()
        return await on_model_thread(lambda: threading.current_thread().name)

    assert asyncio.run(run()).startswith("model")


def test_run_on_model_thread_returns_the_result() -> None:
    assert run_on_model_thread(lambda a, b: (a + b, threading.current_thread().name), 2, 3)[0] == 5


def test_cpu_runtimes_run_their_batches_on_the_model_thread(tmp_path: Path) -> None:
    repository = ModelRepository(make_repository(tmp_path), device="cpu", warmup=False)
    repository.load_all()
    runtimes = build_runtimes(repository, Settings(), Metrics())
    assert {r.batcher._executor for r in runtimes.values()} == {model_executor()}
    seen = []
    runtime = runtimes[("vis", 1)]
    runtime.entry.model.register_forward_pre_hook(
        lambda module, args: seen.append(threading.current_thread().name)
    )

    async def run() -> None:
        await runtime.classify(torch.rand(3, 16, 16), "parallel")
        await runtime.batcher.drain()

    asyncio.run(run())
    assert len(seen) == 1 and seen[0].startswith("model")
