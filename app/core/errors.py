"""The error family of the server: every error answer is an :class:`ApiError` (or a subclass),
``{"error": "..."}`` with its status and headers (DESIGN.md section 7), answered by the one
handler :func:`app.api.error_handlers.install_error_handlers` installs.

Bad input never becomes a 500: request validation → 422 naming the field, images → their
:class:`app.serving.images.ImageError` status (400 / 413 / 415 / 422), graphs → 422, OIP
tensors → 400 (422 for element values out of range), bodies nested too deep → 400, unknown
models → 404, a request over a cost limit → 413 (:mod:`app.serving.cost_limits`), a full queue
or an expected wait past the request's deadline → 503 with the ``Retry-After`` the batcher
computed from its drain rate (:mod:`app.serving.admission`), a draining server → 503 with
``Retry-After``, a decoder process that died → 503, a model version that cannot load → 503
without ``Retry-After`` and with its ``reason`` class (permanent until a restart), a request
past its deadline → 504. Anything else is a server fault: logged with its traceback, answered
500 without internals.

A subclass with a fixed status sets the class attribute ``status_code`` and passes it on;
one whose answer carries more than ``{"error": message}`` overrides :meth:`ApiError.body`.
Members of the family pickle whatever their constructor (the decoder processes send theirs
back to the server, :mod:`app.serving.decoder_worker`). This module imports the web framework
only when it builds an answer: the decoder processes import it, and start faster without.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.responses import JSONResponse

RETRY_AFTER_S = 1


def _rebuild(cls: type[ApiError], args: tuple[Any, ...], state: dict[str, Any]) -> ApiError:
    """Unpickle an :class:`ApiError` without calling its constructor."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class ApiError(Exception):
    """An error answer: ``status_code``, ``message`` (the body's ``error``) and extra
    ``headers``."""

    status_code: int = 500

    def __init__(
        self, status_code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": self.message}

    def response(self) -> JSONResponse:
        """The whole answer: :meth:`body` with ``status_code`` and ``headers``."""
        from fastapi.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": message}`` with ``status_code``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status_code, headers=dict(headers or {}))


def unavailable(message: str) -> ApiError:
    """503 with Retry-After."""
    return ApiError(503, message, {"Retry-After": str(RETRY_AFTER_S)})
