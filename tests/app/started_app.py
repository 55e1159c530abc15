"""Helpers for tests that run the app in-process on one event loop: its lifespan entered by
hand with requests through ``httpx.ASGITransport`` (:func:`started_app`), and a :class:`Gate`
that holds the model's forward until the test releases it, so which request runs, waits or is
refused is decided by the test, never by timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import torch
from fastapi import FastAPI

WAIT_S = 10.0
START_TIMEOUT_S = 60.0


@asynccontextmanager
async def started_app(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Event]]:
    """``app`` with its start-up done (its error raised if it failed), a client, and the event
    that starts its shutdown; on exit the shutdown runs to its end."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # start-up failed: raise its error
    assert started.is_set(), "the app did not start"
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, stop
    finally:
        stop.set()
        await task


class Gate:
    """Replaces ``model.forward``: every call records its batch size, signals :attr:`entered`
    and waits for :attr:`release` before running the real forward, then signals
    :attr:`finished`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forward: Callable[..., torch.Tensor] = model.forward
        self.batch_sizes: list[int] = []
        self.entered = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)
        self.release = threading.Event()
        model.forward = self  # type: ignore[method-assign]

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.batch_sizes.append(int(x.shape[0]))
        self.entered.release()
        if not self.release.wait(WAIT_S):
            raise RuntimeError("the test never released the gate")
        try:
            return self.forward(x, *args, **kwargs)
        finally:
            self.finished.release()

    async def wait_entered(self) -> None:
        """Until one more forward call has started (in the batcher's worker thread)."""
        assert await asyncio.to_thread(self.entered.acquire, True, WAIT_S)

    async def wait_finished(self) -> None:
        """Until one more forward call has returned."""
        assert await asyncio.to_thread(self.finished.acquire, True, WAIT_S)
