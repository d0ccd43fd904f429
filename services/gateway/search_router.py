"""Routes: hybrid search within what the caller may read."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, UserDep
from services.gateway.schemas import SearchResponse

router = APIRouter(prefix="/api", tags=["search"])


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(None, ge=1, le=100)


@router.post("/search", response_model=SearchResponse)
async def search(body: SearchRequest, user: UserDep, services: ServicesDep) -> dict:
    return await run_in_threadpool(services.search.search, body.query, body.k, user)
