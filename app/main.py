"""The FastAPI application: ``create_app(settings) -> FastAPI``.

Start-up (lifespan): the model repository is loaded and warmed up in a worker thread (the
event loop stays free, so ``/v2/health/live`` answers meanwhile), model info and evaluation
metrics are exported, and every READY version gets a :class:`app.inference.ModelRuntime`
with its own batcher; then the server reports ready. Shutdown (uvicorn runs it on SIGTERM
once in-flight requests are done): the server reports not ready and every batcher drains
(queued work finishes, new work gets 503).

With ``engine_socket`` (process mode, ``PLSTM_ENGINE=process``) the models live in the engine
process instead: the lifespan is :func:`app.engine_client.engine_lifespan` and the runtimes
forward requests to the engine's batchers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio.to_thread
from fastapi import FastAPI

from app.engine_client import EngineClient, RemoteRuntimes, engine_lifespan
from app.engine_entries import RemoteRepository
from app.errors import install_error_handlers
from app.inference import build_runtimes
from app.logging import RequestIdMiddleware, install_request_id_factory
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, MetricsMiddleware
from app.repository import ModelRepository
from app.routes import ops, v1, v2
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def server_version() -> str:
    try:
        return version("plstm")
    except PackageNotFoundError:
        return "0.0.0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.engine is not None:
        async with engine_lifespan(app):
            yield
        return
    settings: Settings = app.state.settings
    repository: ModelRepository = app.state.repository
    metrics: Metrics = app.state.metrics
    logger.info("loading model repository %s", repository.path)
    await anyio.to_thread.run_sync(repository.load_all)
    for entry in repository.entries():
        if entry.ready and entry.architecture is not None:
            metrics.set_model_info(entry.name, entry.version, entry.architecture, entry.metrics)
    runtimes = build_runtimes(repository, settings, metrics)
    app.state.runtimes = runtimes
    app.state.ready = True
    logger.info("ready: %d model version(s) serving", len(runtimes), extra={"ready": True})
    try:
        yield
    finally:
        app.state.ready = False
        app.state.draining = True
        logger.info("shutting down: draining %d batcher(s)", len(runtimes))
        await asyncio.gather(*(r.batcher.drain() for r in runtimes.values()))
        logger.info("drained")


def build_repository(settings: Settings) -> ModelRepository:
    """The (not yet loaded) repository ``settings`` describe; ValueError when the configured
    device does not exist here."""
    return ModelRepository(
        settings.model_repository,
        settings.device,
        warmup=settings.warmup,
        onnx=settings.onnx,
        onnx_max_graph_nodes=settings.max_atoms,
        cuda_graphs=settings.cuda_graphs,
        max_batch_size=settings.max_batch_size,
        max_request_memory_mb=settings.max_request_memory_mb,
    )


def create_app(
    settings: Settings | None = None,
    *,
    engine_socket: str | None = None,
    engine_pid: int | None = None,
) -> FastAPI:
    """The server app for ``settings`` (default: :func:`app.settings.get_settings`).
    ValueError when the configured device does not exist here. With ``engine_socket`` the
    models run in the engine process (id ``engine_pid``, if known) listening there
    (:mod:`app.engine`)."""
    settings = get_settings() if settings is None else settings
    install_request_id_factory()
    app = FastAPI(
        title="pLSTM model server",
        version=server_version(),
        description="Image classification and molecule property prediction with pLSTM "
        "models: a friendly API (/v1) and the Open Inference Protocol v2 (/v2).",
        lifespan=lifespan,
    )
    metrics = Metrics(engine_families=engine_socket is None)
    app.state.settings = settings
    app.state.metrics = metrics
    if engine_socket is None:
        app.state.engine = None
        app.state.repository = build_repository(settings)
        app.state.runtimes = {}
    else:
        app.state.engine = EngineClient(engine_socket, engine_pid)
        app.state.repository = RemoteRepository(settings.model_repository)
        app.state.runtimes = RemoteRuntimes(app.state.engine)
    app.state.ready = False
    app.state.draining = False
    install_error_handlers(app)
    app.include_router(v1.router)
    app.include_router(v2.router)
    app.include_router(v2.health_router)
    app.include_router(ops.router)
    # added innermost first: request id (outermost) → metrics → body limit → routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
