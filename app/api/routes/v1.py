"""The friendly API: model listing, image classification and molecule prediction."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Literal

import anyio.to_thread
import torch
from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from app.api.dependencies import ApiKey, RepositoryDep, SettingsDep
from app.api.molecules import (
    INLINE_MOLECULE_WORK,
    check_request,
    graphs_from_request,
    molecule_limits,
)
from app.api.openapi import error_responses
from app.api.routes.common import (
    ModelName,
    VersionQuery,
    choose_path,
    find_ready_entry,
    find_runtime,
    finite_outputs,
    image_size,
    inflight,
    padded_image_size,
)
from app.api.routes.decoded_body import DecodedBodyRoute
from app.api.schemas.common import ImageSize, Prediction, Timings
from app.api.schemas.v1 import (
    ClassifyResponse,
    ModelList,
    ModelSummary,
    PredictRequest,
    PredictResponse,
    RegressionValue,
)
from app.core.errors import ApiError
from app.serving import backends
from app.serving.cost_formulas import GraphBatch
from app.serving.cost_limits import check_tokens
from app.serving.deadlines import request_deadline, unless_disconnected
from app.serving.decoder_pool import run_heavy
from app.serving.images import decodes_quickly, header_size, load_image
from app.serving.inference import Outcome
from app.serving.model_state import NO_VERSIONS
from app.serving.repository import ModelEntry

DEFAULT_TOP_K = 5
MAX_TOP_K = 1000
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")
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


def _task(entry: ModelEntry) -> str:
    return str(entry.config.get("task", "classification"))


def _labels(entry: ModelEntry, count: int) -> list[str]:
    return list(entry.labels) if len(entry.labels) == count else [str(i) for i in range(count)]


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
        task=_task(entry),  # type: ignore[arg-type]
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


def _timings(outcome: Outcome, start: float) -> Timings:
    return Timings(
        queue_ms=outcome.queue_s * 1000,
        inference_ms=outcome.inference_s * 1000,
        total_ms=(time.perf_counter() - start) * 1000,
    )


def _ranked(probabilities: torch.Tensor, labels: list[str], k: int) -> list[Prediction]:
    values, indices = probabilities.topk(k)
    return [
        Prediction(label=labels[i], index=i, probability=min(1.0, max(0.0, p)))
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


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


async def _read_image(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """The uploaded image bytes and their content type: multipart field ``image`` or a raw
    ``image/*`` (or ``application/octet-stream``) body."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16, max_part_size=max_bytes) as form:
            field = form.get("image")
            if not isinstance(field, UploadFile):
                raise ApiError(422, "image: multipart field 'image' with a file is missing")
            return await field.read(), field.content_type
    if not kind.startswith(RAW_IMAGE_TYPES):
        raise ApiError(
            415,
            f"unsupported content type {kind or 'none'!r}: send the image as multipart field "
            "'image' or as a raw image/* body",
        )
    return await request.body(), content_type


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
    if entry.kind != "image" or runtime.spec is None:
        raise ApiError(400, f"model {name!r} takes molecules: use POST /v1/models/{name}/predict")
    num_classes = int(entry.config["num_classes"])
    runtime.admit(deadline)  # an overloaded model sheds before the image is decoded
    with inflight(request, name):
        data, content_type = await _read_image(request, settings.max_body_bytes)
        if resize == "native" and (header := header_size(data)) is not None:
            # too many patches: refused before the pixels are decoded
            grid = padded_image_size(entry, height=header[1], width=header[0])
            check_tokens(grid, settings.max_tokens, "resize=model")
        load = partial(
            load_image,
            data,
            runtime.spec,
            content_type=content_type,
            resize=resize,
            max_pixels=settings.max_image_pixels,
        )
        prepared = load() if decodes_quickly(data) else await anyio.to_thread.run_sync(load)
        height, width = prepared.size
        chosen = choose_path(
            entry,
            path,
            image_size(entry, height, width),
            deadline,
            settings,
            smaller="resize=model" if resize == "native" else "",
            status=422,
            field="path",
        )
        outcome = await unless_disconnected(
            request, runtime.classify(prepared.tensor, chosen, deadline)
        )
    probabilities = finite_outputs(outcome.outputs, name).softmax(-1)
    k = min(top_k or DEFAULT_TOP_K, num_classes)
    return ClassifyResponse(
        model=name,
        version=str(entry.version),
        path=chosen,
        resize=resize,
        image_size=ImageSize(height=height, width=width),
        original_size=ImageSize(height=prepared.original_size[0], width=prepared.original_size[1]),
        timings=_timings(outcome, start),
        predictions=_ranked(probabilities, _labels(entry, num_classes), k),
    )


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
    if entry.kind != "graph":
        raise ApiError(400, f"model {name!r} takes images: use POST /v1/models/{name}/classify")
    runtime.admit(deadline)
    with inflight(request, name):
        limits = molecule_limits(settings)
        work = await anyio.to_thread.run_sync(check_request, body, limits)
        graphs = await run_heavy(
            graphs_from_request, body, limits, heavy=work > INLINE_MOLECULE_WORK
        )
        size = await anyio.to_thread.run_sync(GraphBatch.of, graphs)
        chosen = choose_path(
            entry,
            path,
            size,
            deadline,
            settings,
            smaller="fewer or smaller molecules",
            status=422,
            field="path",
        )
        outcome = await unless_disconnected(
            request, runtime.predict(graphs, chosen, deadline, size=size)
        )
    task = _task(entry)
    outputs = finite_outputs(outcome.outputs, name)
    labels = _labels(entry, outputs.shape[1])
    results = []
    for g, (graph, row) in enumerate(zip(graphs, outputs, strict=True)):
        if task == "classification":
            ranked = _ranked(row.softmax(-1), labels, len(labels))
            results.append({"index": g, "num_atoms": graph.num_nodes, "predictions": ranked})
        else:
            values = [
                RegressionValue(name=n, value=v) for n, v in zip(labels, row.tolist(), strict=True)
            ]
            results.append({"index": g, "num_atoms": graph.num_nodes, "values": values})
    return PredictResponse(
        model=name,
        version=str(entry.version),
        path=chosen,
        task="regression" if task == "regression" else "classification",
        timings=_timings(outcome, start),
        results=results,  # type: ignore[arg-type]
    )
