"""uvicorn's httptools HTTP/1.1 protocol with limits on what a client may hold.

:class:`HardenedHttpToolsProtocol` (``plstm serve`` runs uvicorn with it) keeps httptools'
parser and uvicorn's request cycle, and adds, from :class:`app.core.settings.Settings`:

- a request head (request line and headers) of at most ``max_header_bytes`` bytes and
  ``max_header_count`` header fields, else 431; the bytes of an unfinished head are counted
  as they arrive, so an endless header is cut off at the limit, never buffered whole;
- a head that must arrive within ``header_timeout_s`` of its first byte (slowloris), and a
  body within ``body_timeout_s`` of the end of its head, else 408;
- an idle connection (a new one that sends nothing, or keep-alive between requests) closed
  after ``keep_alive_timeout_s`` (uvicorn's ``timeout_keep_alive``);
- over ``max_connections`` open connections (uvicorn's ``limit_concurrency``) new requests
  get 503 with Retry-After.

Every refusal is ``{"error": "..."}`` with the security headers and ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app.api.security_headers import security_headers
from app.core.errors import ApiError
from app.core.settings import get_settings

logger = logging.getLogger(__name__)

HEADER_LINE_OVERHEAD = 4
"""': ' and CRLF around each header field, counted towards max_header_bytes."""
BUSY_MESSAGE = "server busy: too many open connections"


class HeadRejected(ApiError):
    """Raised from a parser callback to stop parsing a head over a limit (answered
    ``status_code`` by the protocol itself, before any application runs)."""


def error_bytes(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole ``{"error": message}`` answer with ``status`` that closes the connection."""
    body = json.dumps({"error": message}).encode()
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *security_headers(""),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer over ``max_connections``: 503 with Retry-After, then close."""
    body = json.dumps({"error": BUSY_MESSAGE}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"retry-after", b"1"),
        *security_headers(""),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with the limits of the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        self.reading_head = True
        """Between the end of a message (or the connection's start) and the end of a head."""
        self.head_started = False
        """A head has begun (its first byte parsed) and not ended."""
        self.body_pending = False
        """A body has begun (its head ended) and not ended."""
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms the idle timeout only after a response: a silent new connection too
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.reading_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no WebSocket here: the request goes on as plain HTTP
        except httptools.HttpParserError as exc:
            rejected = exc.__context__ if isinstance(exc.__context__, HeadRejected) else None
            if rejected is None:
                logger.info("invalid HTTP request from %s: %s", self.client, exc)
                self._refuse(400, "invalid HTTP request")
            else:
                self._refuse(rejected.status_code, rejected.message)
            return
        # timers only for what this chunk left unfinished (most requests come whole); bytes
        # that begin no message yet (blank lines) count as a head too
        if self.reading_head and (self.head_started or self.head_bytes):
            if self.head_bytes > self.max_header_bytes:
                self._refuse(431, self._head_too_large())
            elif self.head_timer is None:
                self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)
        elif self.body_pending and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.body_timeout_s, self._body_timeout)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_started = True

    def on_headers_complete(self) -> None:
        self.reading_head = self.head_started = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        size = len(self.url) + sum(
            len(name) + len(value) + HEADER_LINE_OVERHEAD for name, value in self.headers
        )
        if size > self.max_header_bytes:
            raise HeadRejected(431, self._head_too_large())
        if len(self.headers) > self.max_header_count:
            raise HeadRejected(
                431,
                f"{len(self.headers)} header fields exceed the limit of {self.max_header_count}",
            )
        super().on_headers_complete()
        self.body_pending = self._has_body() and not self.pipeline  # a queued one is not read yet

    def on_message_complete(self) -> None:
        self.body_pending = False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        self.reading_head = True
        self.head_bytes = 0
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if app is service_unavailable:  # over limit_concurrency: our JSON answer instead
            app = too_many_connections
        super()._start_asgi_task(cycle, app)

    # ------------------------------------------------------------------ limits

    def _head_too_large(self) -> str:
        return f"request head exceeds the limit of {self.max_header_bytes} bytes"

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return True
        return False

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.reading_head and not self.transport.is_closing():
            self._refuse(408, f"request head not received within {self.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        self.body_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        if self.pipeline:  # answering an earlier request: its response must not be cut
            self.transport.close()
            return
        if cycle.response_started:
            self.transport.close()
        else:
            self._refuse(408, f"request body not received within {self.body_timeout_s:g} s")
        # the app's receive() now answers http.disconnect: it stops waiting for the body
        cycle.disconnected = True
        cycle.message_event.set()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` ``{"error": message}`` and close the connection."""
        self._cancel_timers()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, message, self.server_state.default_headers))
            self.transport.close()
