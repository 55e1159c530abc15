"""Exception → HTTP answer. Every error body is ``{"error": "..."}`` (DESIGN.md section 7).

One handler answers the whole :class:`app.core.errors.ApiError` family (images, graphs,
tensors, bodies, limits, unknown or unavailable models, load shedding, draining, timeouts,
decoder failures: see :mod:`app.core.errors` for the statuses); FastAPI's request validation
errors become 422 naming the field, Starlette's HTTP exceptions keep their status. Anything else
is a server fault: logged with its traceback, answered 500 without internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas.common import validation_error_message
from app.api.security_headers import security_headers
from app.core.errors import ApiError, error_response

logger = logging.getLogger(__name__)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    """Every member of the error family: its status, body and headers."""
    assert isinstance(exc, ApiError)
    return exc.response()


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
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
