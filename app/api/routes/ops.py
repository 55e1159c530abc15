"""Operations endpoints, open without the API key: Prometheus metrics and a health summary
(``GET`` and ``HEAD``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.dependencies import EngineDep, MetricsDep, RepositoryDep, ServerStateDep
from app.api.openapi import error_responses
from app.api.schemas.common import EngineState, Health, VersionState

router = APIRouter(tags=["ops"])

PROMETHEUS_TEXT = "text/plain"


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={
        200: {
            "description": "Every plstm_* metric family in the Prometheus text format.",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
        },
        **error_responses(431, 503),
    },
)
async def metrics(metrics: MetricsDep, engine: EngineDep) -> Response:
    body, content_type = metrics.render()
    if engine is not None:  # the batcher and model families are recorded in the engine
        body += await engine.metrics_text()
    return Response(body, media_type=content_type)


@router.head(
    "/healthz",
    response_model=None,
    summary="Liveness, without a body",
    responses=error_responses(431, 503),
)
@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness with the state of every model version",
    responses=error_responses(431, 503),
)
async def healthz(server: ServerStateDep, repository: RepositoryDep, engine: EngineDep) -> Health:
    models = {
        f"{e.name}/{e.version}": VersionState(state=e.state, reason=e.reason)  # type: ignore[arg-type]
        for e in repository.entries()
    }
    models.update(
        {
            name: VersionState(state="UNAVAILABLE", reason="no_versions")
            for name in repository.unversioned()
        }
    )
    return Health(
        status="ok",
        ready=server.serving,
        draining=server.draining,
        engine="inline" if engine is None else EngineState(connected=engine.connected),
        models=dict(sorted(models.items())),
    )
