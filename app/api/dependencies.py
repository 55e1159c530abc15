"""FastAPI dependencies (async: plain functions would each cost a thread-pool hop per request):
the app's settings, repository, metrics, server state (:class:`ServerState`, which holds the
model runtimes) and engine connection, and the optional API key check (``PLSTM_API_KEY``)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.core.errors import ApiError
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.engine.client import EngineClient
from app.serving.repository import ModelRepository
from app.serving.server_state import ServerState


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_server_state(request: Request) -> ServerState:
    """The server's life as the lifespans write it: ready, draining, the runtimes."""
    return request.app.state.server


async def get_engine(request: Request) -> EngineClient | None:
    """The connection to the engine process; None when the models run in this process."""
    return request.app.state.engine


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServerStateDep = Annotated[ServerState, Depends(get_server_state)]
EngineDep = Annotated[EngineClient | None, Depends(get_engine)]


BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="The API key (PLSTM_API_KEY)."
)
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The API key (PLSTM_API_KEY).",
)


async def require_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    header: Annotated[str | None, Depends(API_KEY_HEADER)],
) -> None:
    """401 unless the key is configured off or sent as ``Authorization: Bearer <key>`` or
    ``X-API-Key``."""
    if settings.api_key is None:
        return
    given = bearer.credentials.strip() if bearer is not None else header
    expected = settings.api_key.get_secret_value()
    if not given or not secrets.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
            {"WWW-Authenticate": "Bearer"},
        )


ApiKey = Depends(require_api_key)
