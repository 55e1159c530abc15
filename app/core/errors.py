"""The error family of the server: every answer other than a success is an :class:`ApiError`,
``{"error": "..."}`` with its status and headers (DESIGN.md section 7); the handlers are
installed by :func:`app.api.error_handlers.install_error_handlers`."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error answer raised by a route: ``status_code``, ``message`` and extra headers."""

    def __init__(
        self, status_code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": message}`` with ``status_code``."""
    return JSONResponse({"error": message}, status_code=status_code, headers=dict(headers or {}))


def unavailable(message: str) -> ApiError:
    """503 with Retry-After."""
    return ApiError(503, message, {"Retry-After": str(RETRY_AFTER_S)})
