"""Open Inference Protocol v2 (KServe / Triton REST), JSON tensors only.

Image models take input ``images`` (FP32 model input or UINT8 raw pixels, NCHW or NHWC; see
:mod:`app.molecules`), graph models input ``smiles`` (BYTES ``[B]``). Outputs:
``probabilities`` and ``logits`` ``[B,K]`` (classification) or ``values`` ``[B,T]``
(regression), FP32. The inference path is the request parameter ``path`` (default auto).
Health endpoints are open; the rest needs the API key when one is configured.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from functools import partial
from typing import Any

import anyio.to_thread
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.admission import Deadline
from app.cost_formulas import GraphBatch, Size
from app.deadlines import request_deadline, unless_disconnected
from app.dependencies import ApiKey, RepositoryDep, SettingsDep
from app.errors import ApiError, error_response
from app.inference import Outcome
from app.molecules import graphs_from_tensor, images_from_tensor
from app.repository import ModelEntry
from app.routes import choose_path, find_entry, find_runtime, image_size, inflight
from app.routes.v1 import ERRORS
from app.schemas import (
    PATHS,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
    validation_error_message,
)
from app.settings import Settings

PLATFORM = "pytorch"
BINARY_HEADER = "inference-header-content-length"

router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[ApiKey], responses=ERRORS)
health_router = APIRouter(prefix="/v2/health", tags=["v2"])


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


@health_router.get("/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@health_router.get("/ready", summary="Server readiness", response_model=None)
async def ready(request: Request) -> dict[str, bool] | JSONResponse:
    state = request.app.state
    if state.draining:
        return error_response(503, "the server is shutting down", {"Retry-After": "1"})
    if not state.ready:
        return error_response(503, "the server is starting: models are still loading")
    if not state.runtimes:
        return error_response(503, "no model is ready")
    return {"ready": True}


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="plstm", version=request.app.version, extensions=[])


@router.get("/models/{name}", response_model=ModelMetadata, summary="Model metadata")
@router.get(
    "/models/{name}/versions/{version}", response_model=ModelMetadata, include_in_schema=False
)
async def metadata(
    request: Request, name: str, repository: RepositoryDep, version: str | None = None
) -> ModelMetadata:
    entry = find_entry(request, name, _version(name, version))
    if entry.kind is None:
        raise ApiError(503, f"model {name!r} version {entry.version}: {entry.reason}")
    return model_metadata(entry, repository.versions(name))


@router.get("/models/{name}/ready", response_model=ModelReady, summary="Model readiness")
@router.get(
    "/models/{name}/versions/{version}/ready", response_model=ModelReady, include_in_schema=False
)
async def model_ready(request: Request, name: str, version: str | None = None) -> Any:
    entry = find_entry(request, name, _version(name, version))
    ok = bool(request.app.state.ready and not request.app.state.draining and entry.ready)
    ok = ok and (entry.name, entry.version) in request.app.state.runtimes
    body = ModelReady(name=name, ready=ok).model_dump()
    return body if ok else JSONResponse(body, status_code=503)


async def _parse(request: Request) -> InferenceRequest:
    if BINARY_HEADER in request.headers:
        raise ApiError(400, "binary tensor data is not supported: send JSON (binary_data=False)")
    try:
        document = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    try:
        parsed = InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise ApiError(400, validation_error_message(exc.errors())) from None
    for out in parsed.outputs or []:
        if (out.parameters or {}).get("binary_data"):
            raise ApiError(400, f"output {out.name!r}: binary_data is not supported")
    return parsed


def _path(parsed: InferenceRequest) -> str:
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


@router.post("/models/{name}/infer", response_model=InferenceResponse, summary="Inference")
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    include_in_schema=False,
)
async def infer(
    request: Request, name: str, settings: SettingsDep, version: str | None = None
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
    wanted = [o.name for o in parsed.outputs] if parsed.outputs else available
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
            graphs = await anyio.to_thread.run_sync(
                partial(
                    graphs_from_tensor,
                    tensor,
                    max_batch=settings.max_graphs_per_request,
                    max_atoms=settings.max_atoms,
                )
            )
            size = await anyio.to_thread.run_sync(GraphBatch.of, graphs)
            chosen = _choose(entry, path, size, deadline, settings, "fewer or smaller molecules")
            outcome = await unless_disconnected(
                request, runtime.predict(graphs, chosen, deadline, size=size)
            )
            outputs = outcome.outputs
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
