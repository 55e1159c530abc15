"""Exception → HTTP answer. Every error body is ``{"error": "..."}`` (DESIGN.md section 7).

Bad input never becomes a 500: request validation → 422 naming the field, images → their
:class:`app.images.ImageError` status (400 / 413 / 415 / 422), graphs → 422, OIP tensors → 400
(422 for element values out of range), bodies nested too deep → 400, unknown models → 404, a
request over a cost limit → 413 (:mod:`app.cost_limits`), a full queue or an expected wait past
the request's deadline → 503 with the ``Retry-After`` the batcher computed from its drain rate
(:mod:`app.admission`), a draining server → 503 with ``Retry-After``, a decoder process that
died → 503, a model version that cannot load → 503 without ``Retry-After`` and with its
``reason`` class (permanent until a restart), a request past its deadline → 504. Anything else
is a server fault: logged with its traceback, answered 500 without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.batching import RequestTimeout, Shed, ShuttingDown
from app.body_decoding import BodyError
from app.decoder_pool import DecoderFailed
from app.images import ImageError
from app.model_state import ModelUnavailable
from app.molecules import InvalidGraph, InvalidTensor
from app.repository import ModelNotFound
from app.schemas import LimitExceeded, validation_error_message
from app.security_headers import security_headers

logger = logging.getLogger(__name__)

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


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.message, exc.headers)


async def _with_status(request: Request, exc: Exception) -> JSONResponse:
    """Errors carrying ``status_code`` and ``message`` (images, graphs, tensors, limits)."""
    status = int(getattr(exc, "status_code", 400))
    return error_response(status, str(getattr(exc, "message", exc)))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _model_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelUnavailable)
    return JSONResponse({"error": str(exc), "reason": exc.reason}, status_code=503)


async def _shed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Shed)
    return error_response(503, f"server busy: {exc}", {"Retry-After": str(exc.retry_after)})


async def _shutting_down(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    return error_response(504, f"request timed out: {exc}")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, validation_error_message(list(exc.errors())))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    # answered outside the middlewares (Starlette's ServerErrorMiddleware): its own headers
    headers = {k.decode(): v.decode() for k, v in security_headers(request.url.path)}
    return error_response(500, "internal server error", headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler of this module on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    for cls in (ImageError, InvalidGraph, InvalidTensor, LimitExceeded, BodyError, DecoderFailed):
        app.add_exception_handler(cls, _with_status)
    app.add_exception_handler(ModelNotFound, _not_found)
    app.add_exception_handler(ModelUnavailable, _model_unavailable)
    app.add_exception_handler(Shed, _shed)
    app.add_exception_handler(ShuttingDown, _shutting_down)
    app.add_exception_handler(RequestTimeout, _timeout)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
