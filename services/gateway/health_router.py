"""Routes: liveness, readiness (503 naming what failed), Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from services.gateway.deps import OperatorDep, ServicesDep
from services.gateway.errors import Forbidden
from services.gateway.schemas import Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness)
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "not ready; admins see which check failed"}},
)
async def readyz(services: ServicesDep, operator: OperatorDep) -> JSONResponse:
    """Ready or not for anyone (load balancers); which check failed only for admins or the metrics token."""
    ready, checks = await services.health.readiness()
    if not operator:
        if ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"error": {"code": "not_ready", "message": "not ready"}}, status_code=503
        )
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    failed = [name for name, result in checks.items() if not result["ok"]]
    message = "not ready: " + "; ".join(f"{name}: {checks[name]['error']}" for name in failed)
    return JSONResponse(
        {"error": {"code": "not_ready", "message": message}, "failed": failed, "checks": checks},
        status_code=503,
    )


@router.get("/metrics")
async def metrics(services: ServicesDep, operator: OperatorDep) -> Response:
    """Prometheus text, for admins or ``Authorization: Bearer <ENCLAVE_METRICS_TOKEN>``."""
    if not operator:
        raise Forbidden("metrics are for admins or the metrics token (ENCLAVE_METRICS_TOKEN)")
    return services.metrics.render()
