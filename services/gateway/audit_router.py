"""Routes (admins only): the audit trail, filtered, as JSON or CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from services.gateway.deps import ServicesDep, admin_user

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(admin_user)])


class AuditEntryOut(BaseModel):
    id: str
    username: str
    action: str
    query: str
    chunk_ids: list[str]
    answer: str | None
    created_at: str


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]


def _filters(
    user: Annotated[str | None, Query(max_length=150, description="exact username")] = None,
    since: Annotated[datetime | None, Query(description="ISO time, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO time, exclusive")] = None,
    q: Annotated[
        str | None, Query(max_length=500, description="text in question or answer")
    ] = None,
) -> dict:
    """The query parameters both endpoints share, as ``AuditService`` keywords."""
    return {"username": user, "since": since, "until": until, "text": q}


FiltersDep = Annotated[dict, Depends(_filters)]


@router.get("/audit", response_model=AuditOut)
async def audit(
    services: ServicesDep,
    filters: FiltersDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict:
    """Who asked what, the chunk ids shown and the answer, newest first."""
    entries = await run_in_threadpool(
        lambda: services.audit.entries(**filters, limit=limit, offset=offset)
    )
    return {"entries": entries}


@router.get(
    "/audit.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the matching entries as CSV"}},
)
async def audit_csv(services: ServicesDep, filters: FiltersDep) -> StreamingResponse:
    return StreamingResponse(
        iterate_in_threadpool(services.audit.csv_lines(**filters)),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="enclave-audit.csv"'},
    )
