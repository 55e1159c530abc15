"""Open Inference Protocol v2 (KServe / Triton REST), JSON tensors only.

Image models take input ``images`` (FP32 model input or UINT8 raw pixels, NCHW or NHWC; see
:mod:`app.api.molecules`), graph models input ``smiles`` (BYTES ``[B]``). Outputs:
``probabilities`` and ``logits`` ``[B,K]`` (classification) or ``values`` ``[B,T]``
(regression), FP32. The inference path is the request parameter ``path`` (default auto).
Health endpoints are open; the rest needs the API key when one is configured.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from app.api.body_decoding import DecodedInferRequest, decode_infer_request
from app.api.dependencies import ApiKey, RepositoryDep, ServerStateDep, SettingsDep
from app.api.handlers import handler_for
from app.api.openapi import RETRY_AFTER, error_responses, inference_request_body
from app.api.routes.common import ModelName, find_entry, find_ready_entry, find_runtime, inflight
from app.api.schemas.common import PATHS
from app.api.schemas.v2 import (
    InferenceResponse,
    Liveness,
    ModelMetadata,
    ModelReady,
    Readiness,
    ServerMetadata,
    TensorMetadata,
)
from app.core.errors import RETRY_AFTER_S, ApiError, error_response
from app.core.settings import Settings
from app.serving.deadlines import request_deadline
from app.serving.decoder_pool import decode_body
from app.serving.model_state import ModelUnavailable
from app.serving.repository import ModelEntry, ModelRepository

PLATFORM = "pytorch"
BINARY_HEADER = "inference-header-content-length"

VERSION_PATTERN = "^[1-9][0-9]*$"
router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[ApiKey])
health_router = APIRouter(prefix="/v2/health", tags=["v2"])
VersionPath = Annotated[
    str,
    Path(
        description="Model version: a positive integer without leading zeros; another value "
        "answers 404.",
        json_schema_extra={"pattern": VERSION_PATTERN, "maxLength": 10},
    ),
]
NOT_READY = {
    503: {
        "description": "Not ready: transient (with Retry-After) while the server starts, drains "
        "or reconnects to its engine; permanent (with a reason) for a version that cannot serve.",
        "headers": {"Retry-After": RETRY_AFTER},
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/ModelReady"},
                        {"$ref": "#/components/schemas/ErrorResponse"},
                    ]
                }
            }
        },
    }
}


def _version(name: str, version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit() or version.startswith("0"):
        raise ApiError(404, f"model {name!r} version {version!r} not found")
    return int(version)


def model_metadata(entry: ModelEntry, versions: list[ModelEntry]) -> ModelMetadata:
    """Inputs and outputs of ``entry``; -1 marks variable dimensions."""
    outputs = int(entry.config.get("num_classes", len(entry.labels) or 1))
    handler = handler_for(entry)
    return ModelMetadata(
        name=entry.name,
        versions=[str(v.version) for v in versions],
        platform=PLATFORM,
        inputs=[handler.v2_input_metadata(entry)],
        outputs=[
            TensorMetadata(name=n, datatype="FP32", shape=[-1, outputs])
            for n in handler.v2_outputs(entry)
        ],
    )


@health_router.head(
    "/live",
    response_model=None,
    summary="Server liveness, without a body",
    responses=error_responses(503),
)
@health_router.get(
    "/live", response_model=Liveness, summary="Server liveness", responses=error_responses(503)
)
async def live() -> Liveness:
    return Liveness(live=True)


@health_router.head(
    "/ready",
    response_model=None,
    summary="Server readiness, without a body",
    responses=error_responses(503),
)
@health_router.get(
    "/ready",
    response_model=Readiness,
    summary="Server readiness",
    responses=error_responses(503),
)
async def ready(server: ServerStateDep) -> Readiness | JSONResponse:
    refusal = server.refusal()
    if refusal is not None:
        return error_response(503, refusal, {"Retry-After": str(RETRY_AFTER_S)})
    if not server.runtimes:
        return error_response(503, "no model is ready")
    return Readiness(ready=True)


@router.get(
    "",
    response_model=ServerMetadata,
    summary="Server metadata",
    responses=error_responses(431, 503),
)
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="plstm", version=request.app.version, extensions=[])


@router.get(
    "/models/{name}",
    response_model=ModelMetadata,
    summary="Model metadata (latest ready version)",
    responses=error_responses(404, 431, 503),
)
async def metadata(request: Request, name: ModelName, repository: RepositoryDep) -> ModelMetadata:
    return _metadata(request, repository, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    summary="Model metadata of one version",
    responses=error_responses(404, 431, 503),
)
async def version_metadata(
    request: Request, name: ModelName, version: VersionPath, repository: RepositoryDep
) -> ModelMetadata:
    return _metadata(request, repository, name, version)


def _metadata(
    request: Request, repository: ModelRepository, name: str, version: str | None
) -> ModelMetadata:
    entry = find_ready_entry(request, name, _version(name, version))
    return model_metadata(entry, repository.versions(name))


@router.head(
    "/models/{name}/ready",
    response_model=None,
    summary="Model readiness (latest version), without a body",
    responses={**error_responses(404, 431), **NOT_READY},
)
@router.get(
    "/models/{name}/ready",
    response_model=ModelReady,
    response_model_exclude_none=True,
    summary="Model readiness (latest version)",
    responses={**error_responses(404, 431), **NOT_READY},
)
async def model_ready(request: Request, name: ModelName) -> Any:
    return _ready(request, name, None)


@router.head(
    "/models/{name}/versions/{version}/ready",
    response_model=None,
    summary="Model readiness of one version, without a body",
    responses={**error_responses(404, 431), **NOT_READY},
)
@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    response_model_exclude_none=True,
    summary="Model readiness of one version",
    responses={**error_responses(404, 431), **NOT_READY},
)
async def version_ready(request: Request, name: ModelName, version: VersionPath) -> Any:
    return _ready(request, name, version)


def _ready(request: Request, name: str, version: str | None) -> Any:
    try:
        entry = find_entry(request, name, _version(name, version))
    except ModelUnavailable as exc:
        return JSONResponse(
            ModelReady(name=name, ready=False, reason=exc.reason).model_dump(exclude_none=True), 503
        )
    if not entry.ready:
        body = ModelReady(name=name, ready=False, reason=entry.reason)  # type: ignore[arg-type]
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
    ok = request.app.state.server.serves(entry.name, entry.version)
    body = ModelReady(name=name, ready=ok).model_dump(exclude_none=True)
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    return body if ok else JSONResponse(body, status_code=503, headers=retry)


async def _parse(request: Request) -> DecodedInferRequest:
    """The validated body; large ones are decoded in a decoder process
    (:mod:`app.serving.decoder_pool`), so parsing never holds the event loop."""
    if BINARY_HEADER in request.headers:
        raise ApiError(400, "binary tensor data is not supported: send JSON (binary_data=False)")
    return await decode_body(decode_infer_request, await request.body())


def _path(parsed: DecodedInferRequest) -> str:
    path = (parsed.parameters or {}).get("path", "auto")
    if path not in PATHS:
        raise ApiError(400, f"parameters.path must be one of {list(PATHS)}, got {path!r}")
    return str(path)


INFER_ERRORS = error_responses(400, 404, 408, 413, 422, 431, 503, 504)


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    summary="Inference (latest ready version)",
    description="Image models take one input 'images', molecule models one input 'smiles' "
    "(GET /v2/models/{name} names them); other inputs answer 400.",
    responses=INFER_ERRORS,
    openapi_extra=inference_request_body(),
)
async def infer(request: Request, name: ModelName, settings: SettingsDep) -> InferenceResponse:
    return await _infer(request, name, None, settings)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    summary="Inference on one version",
    responses=INFER_ERRORS,
    openapi_extra=inference_request_body(),
)
async def version_infer(
    request: Request, name: ModelName, version: VersionPath, settings: SettingsDep
) -> InferenceResponse:
    return await _infer(request, name, version, settings)


async def _infer(
    request: Request, name: str, version: str | None, settings: Settings
) -> InferenceResponse:
    deadline = request_deadline(request, settings.request_timeout_s)
    runtime = find_runtime(request, name, _version(name, version))
    entry = runtime.entry
    handler = handler_for(entry)
    parsed = await _parse(request)
    if len(parsed.inputs) != 1 or parsed.inputs[0].name != handler.v2_input:
        given = [i.name for i in parsed.inputs]
        raise ApiError(400, f"model {name!r} takes one input {handler.v2_input!r}, got {given}")
    available = handler.v2_outputs(entry)
    wanted = parsed.outputs or available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ApiError(400, f"unknown output(s) {unknown}; model {name!r} has {available}")
    requested = _path(parsed)
    runtime.admit(deadline)  # an overloaded model sheds before the tensor is decoded
    with inflight(request, name):
        decoded = await handler.decode_v2(parsed.inputs[0], runtime, settings)
        path = handler.choose(
            entry, requested, decoded.size, deadline, settings, status=400, field="parameters.path"
        )
        predicted = await handler.predict(request, runtime, decoded, path, deadline)
    return InferenceResponse(
        model_name=name,
        model_version=str(entry.version),
        id=parsed.id,
        parameters={"path": path},
        outputs=handler.encode_v2(predicted.outputs, wanted),
    )
