"""Routes: ask a question; JSON answer or SSE stream (events token, citations, done)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.gateway.deps import ServicesDep, UserDep, client_address

router = APIRouter(prefix="/api", tags=["chat"])


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=8000)
    conversation_id: str | None = None
    stream: bool = False


@router.post("/chat")
async def chat(body: ChatRequest, request: Request, user: UserDep, services: ServicesDep):
    services.chat_limit.hit(user.id, client_address(request))
    if not body.stream:
        return await services.chat.answer(user, body.message, body.conversation_id)
    events = await services.chat.stream(user, body.message, body.conversation_id)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
