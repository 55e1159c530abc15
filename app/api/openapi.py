"""The OpenAPI document (``GET /openapi.json``) and the pieces routes declare in it.

Routes name the error statuses they can answer with :func:`error_responses`;
:func:`build_openapi` adds what FastAPI cannot see: limits from the settings, the request body
of ``infer`` (parsed by hand, see :mod:`app.api.routes.v2`), the API key only when one is
configured (its security schemes and 401; :mod:`app.api.dependencies` declares them on every route
that checks the key),
bodiless ``HEAD`` answers, and 422 answers in the ``{"error": ...}`` form of every error
(:mod:`app.core.errors`) instead of FastAPI's default.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.schemas.common import ErrorResponse
from app.api.schemas.v2 import InferenceRequest

RETRY_AFTER = {
    "description": "Seconds after which to try again; only on a transient 503.",
    "required": False,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
ERROR_DESCRIPTIONS = {
    400: "Malformed input the message names: a corrupt image, an invalid tensor, a model of "
    "the other kind.",
    401: "Missing or wrong API key.",
    404: "No such model or version.",
    408: "The request body did not arrive within PLSTM_BODY_TIMEOUT_S; the connection is closed.",
    413: "The body or the image is over a size limit.",
    415: "Unsupported media type.",
    422: "A parameter or body field is invalid; the message names it.",
    431: "The request head is over PLSTM_MAX_HEADER_BYTES or PLSTM_MAX_HEADER_COUNT; the "
    "connection is closed.",
    503: "Transient, with Retry-After: the server is starting or draining, the queue is full, "
    "the inference engine is reconnecting. Permanent, without Retry-After and with a reason: "
    "the model version cannot serve until the server restarts.",
    504: "The request did not finish within PLSTM_REQUEST_TIMEOUT_S.",
}
ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorResponse"}
INFERENCE_REQUEST_REF = "#/components/schemas/InferenceRequest"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error ``codes``: ``{"error": ...}`` bodies, Retry-After
    on 503."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        response: dict[str, Any] = {
            "model": ErrorResponse,
            "description": ERROR_DESCRIPTIONS[code],
        }
        if code == 503:
            response["headers"] = {"Retry-After": RETRY_AFTER}
        responses[code] = response
    return responses


def inference_request_body() -> dict[str, Any]:
    """``openapi_extra`` of the infer routes: their JSON body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": INFERENCE_REQUEST_REF}}},
        }
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document of ``app``'s routes (see the module docstring)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    request_schema = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(request_schema.pop("$defs", {}))
    schemas["InferenceRequest"] = request_schema
    settings = app.state.settings
    schemas["PredictRequest"]["properties"]["graphs"]["maxItems"] = settings.max_graphs_per_request
    keyed = settings.api_key is not None
    if not keyed:  # FastAPI declares the key's schemes on every route that checks it
        components.pop("securitySchemes", None)
    for operations in document["paths"].values():
        for method, operation in operations.items():
            responses = operation["responses"]
            if not keyed:
                operation.pop("security", None)
            elif "security" in operation:
                responses["401"] = _error_response(401)
            if "422" in responses:  # FastAPI's own, but our handler answers every 422
                responses["422"] = _error_response(422)
            if method == "head":
                for response in responses.values():
                    response.pop("content", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[code],
        "content": {"application/json": {"schema": ERROR_SCHEMA_REF}},
    }


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` builds :func:`build_openapi` once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
