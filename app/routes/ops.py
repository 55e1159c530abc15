"""Operations endpoints, open without the API key: Prometheus metrics and a health summary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.dependencies import EngineDep, MetricsDep, RepositoryDep

router = APIRouter(tags=["ops"])


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(metrics: MetricsDep, engine: EngineDep) -> Response:
    body, content_type = metrics.render()
    if engine is not None:  # the batcher and model families are recorded in the engine
        body += await engine.metrics_text()
    return Response(body, media_type=content_type)


@router.get("/healthz", summary="Liveness with a summary of the models")
async def healthz(request: Request, repository: RepositoryDep, engine: EngineDep) -> dict[str, Any]:
    state = request.app.state
    return {
        "status": "ok",
        "ready": bool(state.ready and not state.draining and state.runtimes),
        "draining": bool(state.draining),
        "engine": (
            "inline"
            if engine is None
            else {"connected": engine.connected, "pid": engine.engine_pid}
        ),
        "models": {
            f"{e.name}/{e.version}": {"state": e.state, "reason": e.reason}
            for e in repository.entries()
        },
    }
