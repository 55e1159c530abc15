"""Operations endpoints, open without the API key: Prometheus metrics and a health summary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.dependencies import MetricsDep, RepositoryDep

router = APIRouter(tags=["ops"])


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/healthz", summary="Liveness with a summary of the models")
async def healthz(request: Request, repository: RepositoryDep) -> dict[str, Any]:
    state = request.app.state
    return {
        "status": "ok",
        "ready": bool(state.ready and not state.draining and state.runtimes),
        "draining": bool(state.draining),
        "models": {
            f"{e.name}/{e.version}": {"state": e.state, "reason": e.reason}
            for e in repository.entries()
        },
    }
