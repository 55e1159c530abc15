"""ASGI middlewares: the request body limit (413) and per-request metrics.

:class:`BodyLimitMiddleware` refuses a declared ``Content-Length`` over the limit before
reading anything, and otherwise reads the body (chunked or not) into memory up to the
limit before the app sees it, answering 413 as soon as it is exceeded; so no route ever
holds more than ``max_body_bytes`` of a request.

:class:`MetricsMiddleware` counts every answered request in ``plstm_requests_total`` and
``plstm_request_duration_seconds`` labelled with the model (the ``{name}`` path parameter
when it names a served model, else empty, so label values stay bounded) and the endpoint
(the matched route template, e.g. ``/v1/models/{name}/classify``; ``unmatched`` otherwise).
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import Metrics

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 ``{"error": ...}`` for request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | str) -> str:
        return f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await _send_error(send, 413, self._too_large(declared))
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, self._too_large(f"more than {self.max_bytes}"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Records ``plstm_requests_total`` and ``plstm_request_duration_seconds``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            name = scope.get("path_params", {}).get("name", "")
            repository = getattr(scope["app"].state, "repository", None) if "app" in scope else None
            if repository is None or name not in repository.names():
                name = ""
            self.metrics.observe_request(name, endpoint, status, time.perf_counter() - start)
