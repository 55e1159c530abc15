"""The friendly API: model listing, image classification and molecule prediction."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
import torch
from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from app import backends
from app.cost_formulas import GraphBatch
from app.cost_limits import check_tokens
from app.deadlines import request_deadline, unless_disconnected
from app.dependencies import ApiKey, RepositoryDep, SettingsDep
from app.errors import ApiError, unavailable
from app.images import decodes_quickly, header_size, load_image
from app.inference import Outcome
from app.molecules import graphs_from_request
from app.repository import ModelEntry
from app.routes import (
    choose_path,
    find_entry,
    find_runtime,
    image_size,
    inflight,
    native_image_size,
)
from app.schemas import (
    ClassifyResponse,
    ErrorResponse,
    ImageSize,
    ModelList,
    ModelSummary,
    Prediction,
    PredictRequest,
    PredictResponse,
    RegressionValue,
    Timings,
)

DEFAULT_TOP_K = 5
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
Path = Literal["auto", "parallel", "recurrent", "chunkwise", "onnx"]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503, 504)
}

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[ApiKey], responses=ERRORS)


def _task(entry: ModelEntry) -> str:
    return str(entry.config.get("task", "classification"))


def _labels(entry: ModelEntry, count: int) -> list[str]:
    return list(entry.labels) if len(entry.labels) == count else [str(i) for i in range(count)]


def model_summary(entry: ModelEntry, versions: list[ModelEntry]) -> ModelSummary:
    """The ``/v1`` description of ``entry``; 503 when its kind is unknown (not loadable)."""
    if entry.kind is None:
        raise unavailable(f"model {entry.name!r} version {entry.version}: {entry.reason}")
    return ModelSummary(
        name=entry.name,
        version=str(entry.version),
        versions=[str(v.version) for v in versions],
        architecture=entry.architecture or "",
        kind=entry.kind,
        task=_task(entry),
        labels=list(entry.labels),
        ready=entry.ready,
        paths=list(backends.model_paths(entry)) if entry.model is not None else [],
        input=entry.input_spec,
        preprocessing=entry.preprocessing,
        metrics=entry.metrics,
        weights_sha256=entry.weights_sha256 or "",
        onnx=entry.onnx_status(),
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


@router.get("/models", response_model=ModelList, summary="List the served models")
async def list_models(repository: RepositoryDep) -> ModelList:
    models = []
    for name in repository.names():
        entry = repository.get(name)
        if entry.kind is not None:
            models.append(model_summary(entry, repository.versions(name)))
    return ModelList(models=models)


@router.get("/models/{name}", response_model=ModelSummary, summary="Describe one model")
async def get_model(
    request: Request,
    name: str,
    repository: RepositoryDep,
    version: Annotated[int | None, Query(ge=1, description="Model version.")] = None,
) -> ModelSummary:
    return model_summary(find_entry(request, name, version), repository.versions(name))


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
    "/models/{name}/classify", response_model=ClassifyResponse, summary="Classify an image"
)
async def classify(
    request: Request,
    name: str,
    settings: SettingsDep,
    top_k: Annotated[int | None, Query(ge=1, description="Classes to return (default 5).")] = None,
    path: Annotated[Path, Query(description="Inference path; auto lets the server pick.")] = (
        "auto"
    ),
    resize: Annotated[
        Literal["model", "native"],
        Query(description="model: resize to the training size; native: pad to the patch grid."),
    ] = "model",
    version: Annotated[int | None, Query(ge=1, description="Model version.")] = None,
) -> ClassifyResponse:
    start = time.perf_counter()
    deadline = request_deadline(request, settings.request_timeout_s)
    runtime = find_runtime(request, name, version)
    entry = runtime.entry
    if entry.kind != "image" or runtime.spec is None:
        raise ApiError(400, f"model {name!r} takes molecules: use POST /v1/models/{name}/predict")
    num_classes = int(entry.config["num_classes"])
    if top_k is not None and top_k > num_classes:
        raise ApiError(422, f"top_k: must be between 1 and {num_classes}, got {top_k}")
    runtime.admit(deadline)  # an overloaded model sheds before the image is decoded
    with inflight(request, name):
        data, content_type = await _read_image(request, settings.max_body_bytes)
        if resize == "native" and (header := header_size(data)) is not None:
            # too many patches: refused before the pixels are decoded
            grid = native_image_size(entry, height=header[1], width=header[0])
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
    probabilities = outcome.outputs.softmax(-1)
    k = top_k or min(DEFAULT_TOP_K, num_classes)
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


@router.post("/models/{name}/predict", response_model=PredictResponse, summary="Predict molecules")
async def predict(
    request: Request,
    name: str,
    body: PredictRequest,
    settings: SettingsDep,
    path: Annotated[Path, Query(description="Inference path; auto lets the server pick.")] = (
        "auto"
    ),
    version: Annotated[int | None, Query(ge=1, description="Model version.")] = None,
) -> PredictResponse:
    start = time.perf_counter()
    deadline = request_deadline(request, settings.request_timeout_s)
    runtime = find_runtime(request, name, version)
    entry = runtime.entry
    if entry.kind != "graph":
        raise ApiError(400, f"model {name!r} takes images: use POST /v1/models/{name}/classify")
    runtime.admit(deadline)
    with inflight(request, name):
        graphs = await anyio.to_thread.run_sync(
            partial(
                graphs_from_request,
                body,
                max_graphs=settings.max_graphs_per_request,
                max_atoms=settings.max_atoms,
            )
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
    outputs = outcome.outputs
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
