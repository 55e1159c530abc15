"""HTTP routes: ``v1`` (friendly API), ``v2`` (Open Inference Protocol v2), ``ops`` (metrics,
health), ``explain``. Shared here: finding the runtime that answers a model request, counting
it in flight, and resolving an explicit path (the handlers, :mod:`app.api.handlers`, do the
rest)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Path, Query, Request

from app.core.errors import ApiError, unavailable
from app.core.metrics import Metrics
from app.serving import backends
from app.serving.repository import MODEL_NAME, ModelEntry, ModelRepository
from app.serving.runtime import Runtime
from app.serving.server_state import STARTING, ServerState

MAX_VERSION = 2**31 - 1
ModelName = Annotated[
    str,
    Path(
        description="Model name: a directory of the model repository (GET /v1/models lists "
        "them); another name answers 404.",
        json_schema_extra={"pattern": MODEL_NAME.pattern, "maxLength": 255},
    ),
]
VersionQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_VERSION, description="Model version (default: the latest ready one)."),
]


def find_entry(request: Request, name: str, version: int | None = None) -> ModelEntry:
    """The entry of ``name`` (``version`` or the latest): ModelNotFound (404) for an unknown
    model or version, ModelUnavailable (503) for a model without versions, 503 with
    Retry-After while the models are still loading."""
    repository: ModelRepository = request.app.state.repository
    if not request.app.state.server.ready and not repository.names():
        raise unavailable(STARTING)
    return repository.get(name, version)


def find_ready_entry(request: Request, name: str, version: int | None = None) -> ModelEntry:
    """:func:`find_entry`, and ModelUnavailable (503 naming the reason, no Retry-After) when
    that version cannot serve."""
    entry = find_entry(request, name, version)
    if not entry.ready:
        raise entry.unavailable()
    return entry


def find_runtime(request: Request, name: str, version: int | None = None) -> Runtime:
    """The runtime answering ``name`` / ``version``: 404 for an unknown model or version, 503
    while the server starts or drains (with Retry-After), or when that version cannot serve
    (without)."""
    server: ServerState = request.app.state.server
    refusal = server.refusal()
    if refusal is not None:
        raise unavailable(refusal)
    entry = find_ready_entry(request, name, version)
    runtime = server.runtimes.get((entry.name, entry.version))
    if runtime is None:  # an engine that is (re)connecting has not sent it yet
        raise unavailable(f"model {name!r} version {entry.version} is not ready yet")
    return runtime


@contextmanager
def inflight(request: Request, model: str) -> Iterator[None]:
    """Counts the request in ``plstm_inflight_requests{model}`` while it is handled."""
    metrics: Metrics = request.app.state.metrics
    gauge = metrics.inflight.labels(model)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def resolve_path(entry: ModelEntry, path: str, tokens: int, *, status: int, field: str) -> str:
    """The inference path for ``path`` (auto resolved) without the cost limits (explanations
    have their own); an unusable one is an ApiError with ``status`` naming the request
    ``field``."""
    try:
        return backends.resolve_path(entry, path, tokens)
    except ValueError as exc:
        raise ApiError(status, f"{field}: {exc}") from None
