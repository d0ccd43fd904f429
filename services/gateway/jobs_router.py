"""Routes: job state and progress."""

from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, UserDep
from services.gateway.schemas import JobList, JobOut

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("", response_model=JobList)
async def list_jobs(
    user: UserDep, services: ServicesDep, limit: int = Query(50, ge=1, le=500)
) -> dict:
    return {"jobs": await run_in_threadpool(services.documents.jobs, user, limit)}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, user: UserDep, services: ServicesDep) -> dict:
    """{state: queued|running|done|failed, progress: 0..1, stage, error, ...}."""
    return await run_in_threadpool(services.documents.job, job_id, user)
