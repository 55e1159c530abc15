"""HTTP routes: ``v1`` (friendly API), ``v2`` (Open Inference Protocol v2), ``ops`` (metrics,
health). Shared here: finding the runtime that answers a model request and its path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request

from app import cost_limits
from app.admission import Deadline
from app.cost_formulas import ImageBatch, Size
from app.errors import ApiError, unavailable
from app.inference import ModelRuntime
from app.metrics import Metrics
from app.repository import ModelEntry, ModelRepository
from app.settings import Settings


def find_entry(request: Request, name: str, version: int | None = None) -> ModelEntry:
    """The entry of ``name`` (``version`` or the latest); ModelNotFound (404) otherwise."""
    repository: ModelRepository = request.app.state.repository
    return repository.get(name, version)


def find_runtime(request: Request, name: str, version: int | None = None) -> ModelRuntime:
    """The runtime answering ``name`` / ``version``: 404 for an unknown model or version, 503
    while the server starts, drains, or when that version is not ready."""
    if request.app.state.draining:
        raise unavailable("the server is shutting down")
    if not request.app.state.ready:
        raise unavailable("the server is starting: models are still loading")
    entry = find_entry(request, name, version)
    runtime = request.app.state.runtimes.get((entry.name, entry.version))
    if runtime is None or not entry.ready:
        raise unavailable(
            f"model {name!r} version {entry.version} is unavailable: {entry.reason or 'not ready'}"
        )
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


def image_size(entry: ModelEntry, height: int, width: int) -> ImageBatch:
    """One image of ``height`` × ``width`` pixels (multiples of the patch) as a cost size."""
    patch = int(entry.config["patch_size"])
    return ImageBatch(1, height // patch, width // patch)


def native_image_size(entry: ModelEntry, height: int, width: int) -> ImageBatch:
    """An image of ``height`` × ``width`` pixels padded to the patch grid (``resize=native``)."""
    patch = int(entry.config["patch_size"])
    return ImageBatch(1, -(-height // patch), -(-width // patch))


def choose_path(
    entry: ModelEntry,
    path: str,
    size: Size,
    deadline: Deadline,
    settings: Settings,
    *,
    smaller: str,
    status: int,
    field: str,
) -> str:
    """The inference path to run ``size`` on for the requested ``path`` (auto resolved within
    the cost limits, :mod:`app.cost_limits`): 413 over a limit, naming what fits (``smaller``:
    the advice for a smaller input); an unusable path is an ApiError with ``status`` naming
    the request ``field``."""
    try:
        return cost_limits.choose_path(
            entry,
            path,
            size,
            remaining_s=deadline.left(),
            max_tokens=settings.max_tokens,
            smaller=smaller,
        )
    except ValueError as exc:
        raise ApiError(status, f"{field}: {exc}") from None
