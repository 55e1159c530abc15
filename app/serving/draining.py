"""The HTTP drain on SIGTERM / SIGINT: the server keeps accepting connections, answers every new
request 503 (``Retry-After``, ``Connection: close``) while the requests in flight finish, and
only then lets uvicorn stop (close the listening socket, run the lifespan shutdown, exit).

uvicorn alone would close the listening socket at once, so a client (or a load balancer that
has not yet noticed the stop) would see refused connections instead of an answer. Each worker
process drains on its own: ``plstm serve --workers N`` passes the signal to every worker.

:class:`DrainMiddleware` counts the requests in flight and answers new ones once the drain has
started; :func:`draining_on_signals` (the lifespan of ``plstm serve``'s app) starts the drain on
the first signal and hands the signal on to uvicorn when nothing is in flight any more, or after
:func:`drain_timeout_s`; a second signal is handed on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.settings import Settings

logger = logging.getLogger(__name__)

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_GRACE_S = 5.0
"""Added to the request timeout: the longest a drain waits for the requests in flight."""
SHUTTING_DOWN = "the server is shutting down"


def drain_timeout_s(settings: Settings) -> int:
    """Seconds a drain waits for the requests in flight (uvicorn waits as long again for the
    connections once it stops)."""
    return int(settings.request_timeout_s + DRAIN_GRACE_S)


class Drain:
    """The drain state of one app: requests in flight, and whether new ones are refused."""

    def __init__(self) -> None:
        self.draining = False
        self.inflight = 0
        self._idle: asyncio.Event | None = None

    def start(self) -> None:
        """Refuse new requests from now on (in the event loop's thread)."""
        self.draining = True
        self._idle = asyncio.Event()
        if not self.inflight:
            self._idle.set()

    def finished(self) -> None:
        """One request in flight was answered."""
        self.inflight -= 1
        if not self.inflight and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Until no request is in flight (True) or ``timeout_s`` passed (False); after
        :meth:`start`."""
        assert self._idle is not None, "the drain has not started"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class DrainMiddleware:
    """Counts HTTP requests in flight in ``drain``; once it drains, answers 503."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain
        self.body = json.dumps({"error": SHUTTING_DOWN}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(send)
            return
        self.drain.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.finished()

    async def _refuse(self, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _hand_on(handler: Any, signum: int, frame: FrameType | None) -> None:
    """Do what ``handler`` (a previous signal handler) would have done with the signal."""
    if callable(handler):
        handler(signum, frame)
    elif handler != signal.SIG_IGN:  # the default action (e.g. terminate)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


@contextlib.contextmanager
def draining_on_signals(drain: Drain, timeout_s: float) -> Iterator[None]:
    """While inside, SIGTERM / SIGINT start ``drain`` and reach the handlers installed before
    (uvicorn's) only once it is idle or ``timeout_s`` passed. Must be entered in the event
    loop of the main thread; elsewhere (tests driving the app) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in DRAIN_SIGNALS}
    tasks: set[asyncio.Task[None]] = set()
    signalled = False

    async def drain_then_stop(signum: int, frame: FrameType | None) -> None:
        drain.start()
        logger.info(
            "draining: new requests get 503 while %d in flight finish",
            drain.inflight,
            extra={"inflight": drain.inflight},
        )
        if not await drain.wait_idle(timeout_s):
            logger.warning(
                "drain timed out after %g s with %d request(s) in flight", timeout_s, drain.inflight
            )
        _hand_on(previous[signum], signum, frame)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        if signalled:  # a second signal: stop now
            _hand_on(previous[signum], signum, frame)
            return
        signalled = True

        def start() -> None:
            task = loop.create_task(drain_then_stop(signum, frame))
            tasks.add(task)

        loop.call_soon_threadsafe(start)

    for sig in DRAIN_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, handler)
