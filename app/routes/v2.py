"""Open Inference Protocol v2 (KServe / Triton REST), JSON tensors only.

Image models take input ``images`` (FP32 model input or UINT8 raw pixels, NCHW or NHWC; see
:mod:`app.molecules`), graph models input ``smiles`` (BYTES ``[B]``). Outputs:
``probabilities`` and ``logits`` ``[B,K]`` (classification) or ``values`` ``[B,T]``
(regression), FP32. The inference path is the request parameter ``path`` (default auto).
Health endpoints are open; the rest needs the API key when one is configured.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import anyio.to_thread
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import backends
from app.body_decoding import DecodedInferRequest, decode_infer_request
from app.decoder_pool import decode_body, run_heavy
from app.dependencies import ApiKey, RepositoryDep, SettingsDep
from app.errors import ApiError, error_response
from app.molecules import (
    INLINE_MOLECULE_WORK,
    check_tensor_smiles,
    graphs_from_tensor,
    images_from_tensor,
    molecule_limits,
)
from app.repository import ModelEntry
from app.routes import find_entry, find_runtime, finite_outputs, inflight, resolve_path
from app.routes.v1 import ERRORS
from app.schemas import (
    PATHS,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)

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


async def _parse(request: Request) -> DecodedInferRequest:
    """The validated body; large ones are decoded in a decoder process
    (:mod:`app.decoder_pool`), so parsing never holds the event loop."""
    if BINARY_HEADER in request.headers:
        raise ApiError(400, "binary tensor data is not supported: send JSON (binary_data=False)")
    return await decode_body(decode_infer_request, await request.body())


def _path(parsed: DecodedInferRequest) -> str:
    path = (parsed.parameters or {}).get("path", "auto")
    if path not in PATHS:
        raise ApiError(400, f"parameters.path must be one of {list(PATHS)}, got {path!r}")
    return str(path)


def _resolve(entry: ModelEntry, path: str, tokens: int) -> str:
    return resolve_path(entry, path, tokens, status=400, field="parameters.path")


@router.post("/models/{name}/infer", response_model=InferenceResponse, summary="Inference")
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    include_in_schema=False,
)
async def infer(
    request: Request, name: str, settings: SettingsDep, version: str | None = None
) -> InferenceResponse:
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
            chosen = _resolve(entry, path, backends.image_tokens(entry, *images.shape[2:]))
            outcomes = await asyncio.gather(*(runtime.classify(im, chosen) for im in images))
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
            chosen = _resolve(entry, path, sum(g.num_nodes for g in graphs))
            outputs = (await runtime.predict(graphs, chosen)).outputs
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
