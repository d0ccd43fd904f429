"""Routes: rate an answer (anyone, on their own answers); export all ratings as JSONL (admins)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import AdminDep, ServicesDep, UserDep
from services.gateway.feedback_service import FeedbackService

router = APIRouter(prefix="/api", tags=["feedback"])


class FeedbackRequest(BaseModel):
    message_id: str = Field(min_length=1, max_length=36)
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=2000)


class FeedbackOut(BaseModel):
    id: str
    message_id: str
    rating: Literal["up", "down"]
    comment: str | None
    created_at: str


def feedback_service(services: ServicesDep) -> FeedbackService:
    return FeedbackService(services.sessions)


FeedbackDep = Annotated[FeedbackService, Depends(feedback_service)]


@router.post("/feedback", response_model=FeedbackOut)
async def rate_answer(body: FeedbackRequest, user: UserDep, service: FeedbackDep) -> dict:
    return await run_in_threadpool(service.rate, user, body.message_id, body.rating, body.comment)


@router.get(
    "/admin/feedback/export",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one rating a line"}},
)
async def export_feedback(_admin: AdminDep, service: FeedbackDep) -> Response:
    """Every rating with its question, answer and citations, one JSON object a line."""
    lines = await run_in_threadpool(lambda: list(service.export_lines()))
    return Response(
        "".join(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="feedback.jsonl"'},
    )
