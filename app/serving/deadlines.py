"""When to stop working on a request: its deadline, and its client going away.

A request's deadline is ``PLSTM_REQUEST_TIMEOUT_S`` after its handling starts, or sooner when
the client sends the header ``X-Request-Timeout: <seconds>`` (a positive number; larger values
are capped by the setting). The batcher admits, drops and times out the request by it
(:mod:`app.serving.admission`). :func:`unless_disconnected` stops waiting for a result as soon as
the client closes its connection, which drops the request from the queue before it runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from app.core.errors import ApiError
from app.serving.admission import Deadline

TIMEOUT_HEADER = "X-Request-Timeout"
CLIENT_GONE_STATUS = 499
"""Recorded in the metrics for a request whose client disconnected (nginx's convention; the
client never sees it)."""

T = TypeVar("T")


def request_deadline(request: Request, timeout_s: float) -> Deadline:
    """The request's deadline (module docstring); 400 for a header that is not a positive
    number of seconds."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return Deadline.after(timeout_s)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ApiError(400, f"{TIMEOUT_HEADER}: must be a positive number of seconds, got {raw!r}")
    return Deadline.after(min(value, timeout_s))


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body was read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, awaitable: Awaitable[T]) -> T:
    """The result of ``awaitable``; if the client disconnects first, ``awaitable`` is
    cancelled (its queued work dropped) and :data:`CLIENT_GONE_STATUS` is raised."""
    work = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})  # its queued item is dropped before the answer
    if not work.cancelled():
        return work.result()
    raise ApiError(CLIENT_GONE_STATUS, "the client closed the connection")
