"""Open Inference Protocol v2 (KServe / Triton REST), JSON tensors only.

Image models take input ``images`` (FP32 model input or UINT8 raw pixels, NCHW or NHWC; see
:mod:`app.api.molecules`), graph models input ``smiles`` (BYTES ``[B]``). Outputs:
``probabilities`` and ``logits`` ``[B,K]`` (classification) or ``values`` ``[B,T]``
(regression), FP32. The inference path is the request parameter ``path`` (default auto).
Health endpoints are open; the rest needs the API key when one is configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
import torch
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from app.api.body_decoding import DecodedInferRequest, decode_infer_request
from app.api.dependencies import ApiKey, RepositoryDep, ServerStateDep, SettingsDep
from app.api.molecules import (
    INLINE_MOLECULE_WORK,
    check_tensor_smiles,
    graphs_from_tensor,
    images_from_tensor,
    molecule_limits,
)
from app.api.openapi import RETRY_AFTER, error_responses, inference_request_body
from app.api.routes.common import (
    ModelName,
    choose_path,
    find_entry,
    find_ready_entry,
    find_runtime,
    finite_outputs,
    image_size,
    inflight,
)
from app.api.schemas.common import PATHS
from app.api.schemas.v2 import (
    InferenceResponse,
    Liveness,
    ModelMetadata,
    ModelReady,
    Readiness,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)
from app.core.errors import RETRY_AFTER_S, ApiError, error_response
from app.core.settings import Settings
from app.serving.admission import Deadline
from app.serving.cost_formulas import GraphBatch, Size
from app.serving.deadlines import request_deadline, unless_disconnected
from app.serving.decoder_pool import decode_body, run_heavy
from app.serving.inference import Outcome
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


def input_name(entry: ModelEntry) -> str:
    return "images" if entry.kind == "image" else "smiles"


def output_names(entry: ModelEntry) -> list[str]:
    if entry.config.get("task", "classification") == "regression":
        return ["values"]
    return ["probabilities", "logits"]


def model_metadata(entry: ModelEntry, versions: list[ModelEntry]) -> ModelMetadata:
    """Inputs and outputs of ``entry``; -1 marks variable dimensions."""
    outputs = int(entry.config.get("num_classes", len(entry.labels) or 1))
    if entry.kind == "image":
        channels = int(entry.config.get("in_chans", 3))
        inputs = [TensorMetadata(name="images", datatype="FP32", shape=[-1, channels, -1, -1])]
    else:
        inputs = [TensorMetadata(name="smiles", datatype="BYTES", shape=[-1])]
    return ModelMetadata(
        name=entry.name,
        versions=[str(v.version) for v in versions],
        platform=PLATFORM,
        inputs=inputs,
        outputs=[
            TensorMetadata(name=n, datatype="FP32", shape=[-1, outputs])
            for n in output_names(entry)
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


def _choose(
    entry: ModelEntry, path: str, size: Size, deadline: Deadline, settings: Settings, smaller: str
) -> str:
    return choose_path(
        entry, path, size, deadline, settings, smaller=smaller, status=400, field="parameters.path"
    )


async def _every(awaitables: list[Awaitable[Outcome]]) -> list[Outcome]:
    """All results; when one fails, the others are cancelled (their queued work dropped)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


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
    parsed = await _parse(request)
    expected = input_name(entry)
    if len(parsed.inputs) != 1 or parsed.inputs[0].name != expected:
        given = [i.name for i in parsed.inputs]
        raise ApiError(400, f"model {name!r} takes one input {expected!r}, got {given}")
    available = output_names(entry)
    wanted = parsed.outputs or available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ApiError(400, f"unknown output(s) {unknown}; model {name!r} has {available}")
    path = _path(parsed)
    tensor = parsed.inputs[0]
    runtime.admit(deadline)  # an overloaded model sheds before the tensor is decoded
    with inflight(request, name):
        if entry.kind == "image":
            assert runtime.spec is not None
            images = await anyio.to_thread.run_sync(
                partial(
                    images_from_tensor,
                    tensor,
                    runtime.spec,
                    max_batch=settings.max_queue_size,
                    max_pixels=settings.max_image_pixels,
                )
            )
            size = image_size(entry, *images.shape[2:])
            chosen = _choose(entry, path, size, deadline, settings, "a smaller image")
            outcomes = await unless_disconnected(
                request, _every([runtime.classify(im, chosen, deadline) for im in images])
            )
            outputs = torch.stack([o.outputs for o in outcomes])
        else:
            limits = molecule_limits(settings)
            max_batch = settings.max_graphs_per_request
            work = await anyio.to_thread.run_sync(
                partial(check_tensor_smiles, tensor, max_batch=max_batch, limits=limits)
            )
            graphs = await run_heavy(
                partial(graphs_from_tensor, tensor, max_batch=max_batch, limits=limits),
                heavy=work > INLINE_MOLECULE_WORK,
            )
            size = await anyio.to_thread.run_sync(GraphBatch.of, graphs)
            chosen = _choose(entry, path, size, deadline, settings, "fewer or smaller molecules")
            outcome = await unless_disconnected(
                request, runtime.predict(graphs, chosen, deadline, size=size)
            )
            outputs = outcome.outputs
    outputs = finite_outputs(outputs, name)
    tensors = {"probabilities": outputs.softmax(-1), "logits": outputs, "values": outputs}
    return InferenceResponse(
        model_name=name,
        model_version=str(entry.version),
        id=parsed.id,
        parameters={"path": chosen},
        outputs=[
            ResponseOutput(
                name=n,
                shape=list(tensors[n].shape),
                datatype="FP32",
                data=tensors[n].flatten().tolist(),
            )
            for n in wanted
        ],
    )
