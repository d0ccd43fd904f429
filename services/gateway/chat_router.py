"""Routes: ask a question; JSON answer or SSE stream (events token, citations, done)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.gateway.auth_service import CurrentUser
from services.gateway.deps import Services, current_user, get_services

router = APIRouter(prefix="/api", tags=["chat"])


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=8000)
    conversation_id: str | None = None
    stream: bool = False


@router.post("/chat")
async def chat(body: ChatRequest, user: CurrentUser = Depends(current_user),
               services: Services = Depends(get_services)):
    if not body.stream:
        return await services.chat.answer(user, body.message, body.conversation_id)
    events = await services.chat.stream(user, body.message, body.conversation_id)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
