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


class CitationOut(BaseModel):
    """A passage the answer is attributed to, with the sentence of it that supports the answer."""

    document_id: str
    title: str
    page: int | None = None
    section: str | None = None
    quote: str


class SourceOut(BaseModel):
    """A passage the prompt held (cited or not), best-ranked first."""

    document_id: str
    title: str
    page: int | None = None
    section: str | None = None
    text: str


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str
    answer: str = Field(
        description="The answer shown; the decline (with the nearest sources) when no sentence of the model's answer is supported by the sources."
    )
    declined: bool = Field(description="Whether the answer is the decline.")
    citations: list[CitationOut] = Field(description="Sources the answer is attributed to.")
    sources: list[SourceOut] = Field(description="Every passage the prompt held.")


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "JSON, or with stream=true SSE events: token {text}, citations {citations, sources}, done {conversation_id, message_id, answer, declined}.",
        }
    },
)
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
