"""Exception → HTTP answer. Every error body is ``{"error": "..."}`` (DESIGN.md section 7).

Bad input never becomes a 500: request validation → 422 naming the field, images → their
:class:`app.serving.images.ImageError` status (400 / 413 / 415 / 422), graphs → 422, OIP tensors →
400 (422 for element values out of range), bodies nested too deep → 400, unknown models → 404, a
request over a cost limit → 413 (:mod:`app.serving.cost_limits`), a full queue or an expected wait
past the request's deadline → 503 with the ``Retry-After`` the batcher computed from its drain rate
(:mod:`app.serving.admission`), a draining server → 503 with ``Retry-After``, a decoder process that
died → 503, a model version that cannot load → 503 without ``Retry-After`` and with its
``reason`` class (permanent until a restart), a request past its deadline → 504. Anything else
is a server fault: logged with its traceback, answered 500 without internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.body_decoding import BodyError
from app.api.molecules import InvalidGraph, InvalidTensor
from app.api.schemas.common import validation_error_message
from app.api.schemas.v1 import LimitExceeded
from app.api.security_headers import security_headers
from app.core.errors import RETRY_AFTER_S, ApiError, error_response
from app.serving.batching import RequestTimeout, Shed, ShuttingDown
from app.serving.decoder_pool import DecoderFailed
from app.serving.images import ImageError
from app.serving.model_state import ModelUnavailable
from app.serving.repository import ModelNotFound

logger = logging.getLogger(__name__)


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
