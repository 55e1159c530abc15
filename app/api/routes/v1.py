"""The friendly API: model listing, image classification and molecule prediction."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from app.api.dependencies import ApiKey, RepositoryDep, SettingsDep
from app.api.handlers import GRAPHS, IMAGES
from app.api.handlers.outputs import task
from app.api.image_inputs import IMAGE_MEDIA_TYPES
from app.api.openapi import error_responses
from app.api.routes.common import (
    ModelName,
    VersionQuery,
    find_ready_entry,
    find_runtime,
    inflight,
)
from app.api.routes.decoded_body import DecodedBodyRoute
from app.api.schemas.v1 import (
    ClassifyResponse,
    ModelList,
    ModelSummary,
    PredictRequest,
    PredictResponse,
)
from app.core.errors import ApiError
from app.serving import backends
from app.serving.deadlines import request_deadline
from app.serving.model_state import NO_VERSIONS
from app.serving.repository import ModelEntry

MAX_TOP_K = 1000
Path = Literal["auto", "parallel", "recurrent", "chunkwise", "onnx"]
PathQuery = Annotated[
    Path,
    Query(
        description="Inference path; auto lets the server pick. An explicit path the model "
        "does not offer (see its paths) answers 422."
    ),
]
BINARY = {"type": "string", "format": "binary"}
CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image (PNG, JPEG, WebP or BMP): multipart field 'image', or the "
        "whole body with its image media type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {**BINARY, "description": "The image file."}},
                    "required": ["image"],
                },
                "encoding": {"image": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}},
            },
            **{media_type: {"schema": BINARY} for media_type in IMAGE_MEDIA_TYPES},
            "application/octet-stream": {"schema": BINARY},
        },
    }
}

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[ApiKey], route_class=DecodedBodyRoute)


def model_summary(entry: ModelEntry, versions: list[ModelEntry]) -> ModelSummary:
    """The ``/v1`` description of ``entry``; of an UNAVAILABLE one only its name, versions,
    state and reason."""
    numbers = [str(v.version) for v in versions]
    if not entry.ready:
        return ModelSummary(
            name=entry.name,
            version=str(entry.version),
            versions=numbers,
            state="UNAVAILABLE",
            reason=entry.reason,  # type: ignore[arg-type]
            ready=False,
        )
    return ModelSummary(
        name=entry.name,
        version=str(entry.version),
        versions=numbers,
        state="READY",
        architecture=entry.architecture,
        kind=entry.kind,  # type: ignore[arg-type]
        task=task(entry),  # type: ignore[arg-type]
        labels=list(entry.labels),
        ready=True,
        paths=list(backends.model_paths(entry)),
        input=entry.input_spec,
        preprocessing=entry.preprocessing,
        metrics=entry.metrics,
        weights_sha256=entry.weights_sha256,
        onnx=entry.onnx_status(),
    )


def unversioned_summary(name: str) -> ModelSummary:
    """The ``/v1`` listing of a model whose directory holds no version."""
    return ModelSummary(
        name=name, version=None, versions=[], state="UNAVAILABLE", reason=NO_VERSIONS, ready=False
    )


@router.get(
    "/models",
    response_model=ModelList,
    summary="List the models",
    responses=error_responses(431, 503),
)
async def list_models(repository: RepositoryDep) -> ModelList:
    unversioned = set(repository.unversioned())
    return ModelList(
        models=[
            unversioned_summary(name)
            if name in unversioned
            else model_summary(repository.get(name), repository.versions(name))
            for name in repository.names()
        ]
    )


@router.get(
    "/models/{name}",
    response_model=ModelSummary,
    summary="Describe one model",
    responses=error_responses(404, 422, 431, 503),
)
async def get_model(
    request: Request, name: ModelName, repository: RepositoryDep, version: VersionQuery = None
) -> ModelSummary:
    return model_summary(find_ready_entry(request, name, version), repository.versions(name))


@router.post(
    "/models/{name}/classify",
    response_model=ClassifyResponse,
    summary="Classify an image",
    description="For image models (kind image); a molecule model answers 400.",
    responses=error_responses(400, 404, 408, 413, 415, 422, 431, 503, 504),
    openapi_extra=CLASSIFY_BODY,
)
async def classify(
    request: Request,
    name: ModelName,
    settings: SettingsDep,
    top_k: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_TOP_K,
            description="Classes to return, most probable first (default 5); at most the "
            "model's number of classes are returned.",
        ),
    ] = None,
    path: PathQuery = "auto",
    resize: Annotated[
        Literal["model", "native"],
        Query(description="model: resize to the training size; native: pad to the patch grid."),
    ] = "model",
    version: VersionQuery = None,
) -> ClassifyResponse:
    start = time.perf_counter()
    deadline = request_deadline(request, settings.request_timeout_s)
    runtime = find_runtime(request, name, version)
    entry = runtime.entry
    if entry.kind != IMAGES.kind:
        raise ApiError(400, f"model {name!r} takes molecules: use POST /v1/models/{name}/predict")
    runtime.admit(deadline)  # an overloaded model sheds before the image is decoded
    with inflight(request, name):
        decoded = await IMAGES.decode_v1(request, runtime, settings, resize)
        path = IMAGES.choose(
            entry,
            path,
            decoded.size,
            deadline,
            settings,
            status=422,
            field="path",
            smaller="resize=model" if resize == "native" else "",
        )
        predicted = await IMAGES.predict(request, runtime, decoded, path, deadline)
    return IMAGES.encode_v1(entry, decoded, predicted, top_k=top_k, resize=resize, start=start)


@router.post(
    "/models/{name}/predict",
    response_model=PredictResponse,
    summary="Predict molecules",
    description="For molecule models (kind graph); an image model answers 400.",
    responses=error_responses(400, 404, 408, 413, 422, 431, 503, 504),
)
async def predict(
    request: Request,
    name: ModelName,
    body: PredictRequest,
    settings: SettingsDep,
    path: PathQuery = "auto",
    version: VersionQuery = None,
) -> PredictResponse:
    start = time.perf_counter()
    deadline = request_deadline(request, settings.request_timeout_s)
    runtime = find_runtime(request, name, version)
    entry = runtime.entry
    if entry.kind != GRAPHS.kind:
        raise ApiError(400, f"model {name!r} takes images: use POST /v1/models/{name}/classify")
    runtime.admit(deadline)
    with inflight(request, name):
        decoded = await GRAPHS.decode_v1(body, settings)
        path = GRAPHS.choose(
            entry, path, decoded.size, deadline, settings, status=422, field="path"
        )
        predicted = await GRAPHS.predict(request, runtime, decoded, path, deadline)
    return GRAPHS.encode_v1(entry, decoded, predicted, start=start)
