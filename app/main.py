"""The FastAPI application: ``create_app(settings) -> FastAPI``.

Start-up (lifespan): the model repository is loaded and warmed up on the model thread
(:mod:`app.serving.model_thread`, which also runs every batch on the CPU; the event loop stays
free, so ``/v2/health/live`` answers meanwhile), model info and evaluation
metrics are exported, and every READY version gets a :class:`app.serving.inference.ModelRuntime`
with its own batcher; then the server reports ready, and the objects alive at that point are
frozen out of garbage collection (:func:`start_up_objects_frozen`). On SIGTERM (``plstm
serve``) new requests get 503 until those in flight are answered (:mod:`app.serving.draining`); then
uvicorn runs the shutdown: the server reports not ready and every batcher drains (queued work
finishes, new work gets 503).

Every answer carries security headers (:mod:`app.api.security_headers`); the documentation pages
and their assets are served from the package (:mod:`app.api.docs`).

With ``engine_socket`` (process mode, ``PLSTM_ENGINE=process``) the models live in the engine
process instead: the lifespan is :func:`app.engine.client.engine_lifespan` and the runtimes
forward requests to the engine's batchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from app.api.docs import install_docs
from app.api.error_handlers import install_error_handlers
from app.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from app.api.openapi import install_openapi
from app.api.routes import explain, ops, v1, v2, web
from app.api.security_headers import SecurityHeadersMiddleware
from app.core.logging import RequestIdMiddleware, install_request_id_factory
from app.core.memory import limit_malloc_arenas
from app.core.metrics import Metrics
from app.core.settings import Settings, get_settings
from app.engine.client import EngineClient, RemoteRuntimes, engine_lifespan
from app.engine.entries import RemoteRepository
from app.serving.draining import Drain, DrainMiddleware, drain_timeout_s, draining_on_signals
from app.serving.explanations import Explainers
from app.serving.inference import build_runtimes
from app.serving.model_thread import on_model_thread
from app.serving.repository import ModelRepository, build_repository
from app.serving.server_state import ServerState

logger = logging.getLogger(__name__)


def server_version() -> str:
    try:
        return version("plstm")
    except PackageNotFoundError:
        return "0.0.0"


@contextmanager
def start_up_objects_frozen() -> Iterator[None]:
    """Objects alive once the server has started (modules, models) live as long as it: kept
    out of the collected generations, a full garbage collection no longer traverses them.
    Such a collection holds the GIL, so the event loop, for its whole length: on the 2-core
    test machine one during the largest legal infer body took 140 ms of CPU (480 ms under
    load), frozen a few ms (tests/app/api/test_liveness.py). No collection first: it would stall
    the loop as long, once, and start-up leaves little cyclic garbage."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    models = engine_lifespan(app) if app.state.engine is not None else inline_lifespan(app)
    async with models:
        drain = (
            draining_on_signals(app.state.http_drain, drain_timeout_s(app.state.settings))
            if app.state.drain_on_signals
            else contextlib.nullcontext()
        )
        with drain, start_up_objects_frozen():
            yield


@asynccontextmanager
async def inline_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Loads the models in this process; drains their batchers at shutdown."""
    settings: Settings = app.state.settings
    repository: ModelRepository = app.state.repository
    metrics: Metrics = app.state.metrics
    logger.info("loading model repository %s", repository.path)
    await on_model_thread(repository.load_all)
    for entry in repository.entries():
        if entry.ready and entry.architecture is not None:
            metrics.set_model_info(entry.name, entry.version, entry.architecture, entry.metrics)
    runtimes = build_runtimes(repository, settings, metrics)
    server: ServerState = app.state.server
    server.runtimes = runtimes
    server.ready = True
    logger.info("ready: %d model version(s) serving", len(runtimes), extra={"ready": True})
    try:
        yield
    finally:
        server.stop()
        logger.info("shutting down: draining %d batcher(s)", len(runtimes))
        await asyncio.gather(*(r.batcher.drain() for r in runtimes.values()))
        await app.state.explainers.drain()
        logger.info("drained")


def create_app(
    settings: Settings | None = None,
    *,
    engine_socket: str | None = None,
    engine_pid: int | None = None,
    drain_on_signals: bool = False,
) -> FastAPI:
    """The server app for ``settings`` (default: :func:`app.core.settings.get_settings`).
    ValueError when the configured device does not exist here. With ``engine_socket`` the
    models run in the engine process (id ``engine_pid``, if known) listening there
    (:mod:`app.engine.server`). ``drain_on_signals``: SIGTERM / SIGINT drain the HTTP requests
    before uvicorn sees them (``plstm serve``; :mod:`app.serving.draining`)."""
    settings = get_settings() if settings is None else settings
    limit_malloc_arenas()
    install_request_id_factory()
    app = FastAPI(
        title="pLSTM model server",
        version=server_version(),
        description="Image classification and molecule property prediction with pLSTM "
        "models: a friendly API (/v1) and the Open Inference Protocol v2 (/v2).",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    metrics = Metrics(engine_families=engine_socket is None)
    app.state.settings = settings
    app.state.metrics = metrics
    if engine_socket is None:
        app.state.engine = None
        app.state.repository = build_repository(settings)
        app.state.server = ServerState()
    else:
        app.state.engine = EngineClient(engine_socket, engine_pid)
        app.state.repository = RemoteRepository(settings.model_repository)
        app.state.server = ServerState(RemoteRuntimes(app.state.engine))
    app.state.explainers = Explainers()
    app.state.drain_on_signals = drain_on_signals
    app.state.http_drain = Drain()
    install_error_handlers(app)
    app.include_router(v1.router)
    app.include_router(v2.router)
    app.include_router(v2.health_router)
    app.include_router(ops.router)
    app.include_router(explain.router)
    app.include_router(web.router)
    install_docs(app)
    install_openapi(app)
    # added innermost first: request id (outermost) → security headers → metrics → drain →
    # body limit → routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(DrainMiddleware, drain=app.state.http_drain)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
