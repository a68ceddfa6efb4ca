"""Operations: liveness, readiness and Prometheus metrics."""

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.gateway.dataplane import DataPlane

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_class=Response)
async def healthz() -> Response:
    """Alive: the process answers HTTP (says nothing about the model server)."""
    return Response(b'{"status": "ok"}', media_type="application/json")


@router.get("/readyz", response_class=Response)
async def readyz(request: Request) -> Response:
    """Ready: the model server answers and every configured model has an AVAILABLE version."""
    plane: DataPlane = request.app.state.dataplane
    ready, models = await plane.ready()
    body = {"status": "ready" if ready else "not ready", "models": models}
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests by model, version, operation and status; latencies."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
