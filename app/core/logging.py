"""Structured JSON logs and the request id middleware.

Every log line is one JSON object (``ts``, ``level``, ``logger``, ``message``, ``request_id``
when the line belongs to a request, plus any ``extra=`` fields). The request id is the
client's ``X-Request-ID`` header when it is a sane token (else a fresh uuid4 hex); it is
echoed in the response's ``X-Request-ID`` header and stamped on every line logged while the
request is handled (a context variable, so worker threads started with anyio see it too).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "plstm_request_id", default=None
)
access_logger = logging.getLogger("app.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def install_request_id_factory() -> None:
    """Stamp ``request_id`` on every log record when it is created (idempotent), so any
    handler, including ones formatting later, sees the id of the request that logged it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_plstm_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return record

    factory._plstm_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(level: str = "info") -> None:
    """Send every logger (uvicorn's included) as JSON lines to stderr at ``level``.
    uvicorn's own access log is silenced: :class:`RequestIdMiddleware` logs requests."""
    install_request_id_factory()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def new_request_id(given: str | None) -> str:
    """``given`` when it is 1-128 characters of ``[A-Za-z0-9._:-]``, else a new uuid4 hex."""
    if given is not None and _VALID_ID.match(given):
        return given
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI middleware: assigns the request id, echoes it, logs one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope.get("headers", []):
            if key.decode("latin-1").lower() == REQUEST_ID_HEADER:
                given = value.decode("latin-1")
                break
        request_id = new_request_id(given)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() != REQUEST_ID_HEADER
                ]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_logger.info(
                "%s %s %d",
                scope.get("method"),
                scope.get("path"),
                status,
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                },
            )
            request_id_var.reset(token)
