"""Security headers on every response (an ASGI middleware, :class:`SecurityHeadersMiddleware`).

Every answer gets ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer``, and a Content-Security-Policy: the documentation pages
(``/docs``, ``/redoc``) may load scripts, styles, images and fonts from this server only and
run no inline script (:data:`DOCS_CSP`); everything else is data, never a page (:data:`API_CSP`).
API answers are never cached (``Cache-Control: no-store``); the vendored static assets are
revalidated (``no-cache``, with their ETag). A header the route set itself is kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
STATIC_URL = "/static"
"""Where :mod:`app.api.docs` serves the documentation pages and their assets."""
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""Swagger UI and ReDoc set inline styles (hence 'unsafe-inline' for styles only); ReDoc runs
its search index in a worker made from a blob URL."""
DOCS_PAGES = frozenset({DOCS_URL, REDOC_URL})

COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The security headers of an answer to ``path`` (without a proxy's ``root_path``)."""
    csp = DOCS_CSP if path in DOCS_PAGES else API_CSP
    static = path.startswith(STATIC_URL + "/")
    cache = b"no-cache" if static else b"no-store"
    return [*COMMON_HEADERS, (b"content-security-policy", csp.encode()), (b"cache-control", cache)]


class SecurityHeadersMiddleware:
    """Adds :func:`security_headers` to every HTTP answer that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        extra = security_headers(path[len(root) :] if root and path.startswith(root) else path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
