"""Routes: job state and progress."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from services.gateway.auth_service import CurrentUser
from services.gateway.deps import Services, current_user, get_services

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("")
async def list_jobs(limit: int = Query(50, ge=1, le=500), user: CurrentUser = Depends(current_user),
                    services: Services = Depends(get_services)) -> dict:
    return {"jobs": await run_in_threadpool(services.documents.jobs, user, limit)}


@router.get("/{job_id}")
async def get_job(job_id: str, user: CurrentUser = Depends(current_user),
                  services: Services = Depends(get_services)) -> dict:
    """{state: queued|running|done|failed, progress: 0..1, stage, error, ...}."""
    return await run_in_threadpool(services.documents.job, job_id, user)
