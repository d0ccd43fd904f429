"""Routes: liveness, readiness (503 naming what failed), Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from services.gateway.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    ready, checks = await services.health.readiness()
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    failed = [name for name, result in checks.items() if not result["ok"]]
    message = "not ready: " + "; ".join(f"{name}: {checks[name]['error']}" for name in failed)
    return JSONResponse(
        {"error": {"code": "not_ready", "message": message}, "failed": failed, "checks": checks},
        status_code=503,
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return services.metrics.render()
