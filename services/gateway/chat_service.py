"""Chat: follow-up rewriting, retrieval within the caller's scope, the LLM, cited answers.

One turn: history -> standalone query (``rewrite_query``) -> hits the user may read ->
prompt within the token budget (``compose_prompt``) -> answer from the LLM (whole or
streamed) -> each answer sentence attributed to the sources that support it
(``ground_answer``; an unsupported answer becomes the decline) -> the turn, its
citations and the chunk ids shown are stored (conversation + audit). Every reply carries
``sources`` (each passage the prompt held) beside ``citations`` (those the answer uses).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from llm.client import LLMClient, LLMError
from services.gateway.auth_service import CurrentUser
from services.gateway.context_window import ContextWindow
from services.gateway.conversations_service import ConversationsService
from services.gateway.errors import BadRequest, UpstreamUnavailable
from services.gateway.metrics import GatewayMetrics
from services.gateway.search_service import SearchService, pick_fields

HISTORY_TURNS = 4


@dataclass
class PreparedTurn:
    """A turn ready for the model; ``conversation_id`` is None until a new chat's first answer."""

    conversation_id: str | None
    question: str
    messages: list[dict]
    sources: list[Any]
    chunk_ids: list[str]


CITATION_KEYS = ("document_id", "title", "page", "section", "quote")
SOURCE_KEYS = ("document_id", "title", "page", "section", "text")


def citation_json(citation: Any) -> dict:
    return pick_fields(citation, CITATION_KEYS)


def source_json(hit: Any) -> dict:
    return pick_fields(hit, SOURCE_KEYS)


def sse_event(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class ChatService:
    def __init__(
        self,
        search: SearchService,
        conversations: ConversationsService,
        llm: LLMClient,
        metrics: GatewayMetrics,
        *,
        search_k: int,
        context_window: ContextWindow,
        answer_tokens: int,
        embed: Callable[[list[str]], Sequence[Sequence[float]]],
        answer_stop: list[str] | None = None,
        answer_temperature: float = 0.0,
    ):
        self._search = search
        self._conversations = conversations
        self._llm = llm
        self._metrics = metrics
        self._search_k = search_k
        self._context_window = context_window
        self._answer_tokens = answer_tokens
        self._answer_stop = list(answer_stop or []) or None
        self._answer_temperature = answer_temperature
        self._embed = embed

    async def prepare(
        self, user: CurrentUser, message: str, conversation_id: str | None
    ) -> PreparedTurn:
        from retriever.followup import rewrite_query
        from retriever.prompt import compose_prompt

        question = message.strip()
        if not question:
            raise BadRequest("message must not be empty")
        history: list[dict] = []
        if conversation_id:
            history = await run_in_threadpool(
                self._conversations.history, conversation_id, user, HISTORY_TURNS
            )
        query = rewrite_query(question, history) if history else question
        hits = await run_in_threadpool(self._search.retrieve, query, self._search_k, user)
        try:
            composed = compose_prompt(
                question,
                hits,
                history=history,
                context_tokens=await self._context_window.tokens(),
                answer_tokens=self._answer_tokens,
            )
        except ValueError as exc:  # PromptTooLong and friends: the user can fix the question
            raise BadRequest(str(exc)) from exc
        chunk_ids = [source.chunk_id for source in composed.sources]
        return PreparedTurn(
            conversation_id, question, composed.messages, list(composed.sources), chunk_ids
        )

    async def _finish(self, user: CurrentUser, turn: PreparedTurn, raw_answer: str) -> dict:
        """Attribute the answer, then store the turn: the shown answer (or decline) is what is
        kept, and a new conversation starts only now, so a refused chat leaves none."""
        from retriever.citations import ground_answer

        grounded = await run_in_threadpool(ground_answer, raw_answer, turn.sources, self._embed)
        citations = [citation_json(c) for c in grounded.citations]
        if turn.conversation_id is None:
            turn.conversation_id = await run_in_threadpool(
                self._conversations.start, user, turn.question
            )
        message_id = await run_in_threadpool(
            self._conversations.append_turn,
            turn.conversation_id,
            turn.question,
            grounded.answer,
            citations,
        )
        await self._audit(user, turn, grounded.answer)
        return {
            "conversation_id": turn.conversation_id,
            "message_id": message_id,
            "answer": grounded.answer,
            "declined": grounded.declined,
            "citations": citations,
            "sources": [source_json(hit) for hit in grounded.sources],
        }

    async def _audit(self, user: CurrentUser, turn: PreparedTurn, answer: str | None) -> None:
        """One append-only line per question: the user, the chunk ids shown, the answer."""
        await run_in_threadpool(
            self._search.audit, user, "chat", turn.question, turn.chunk_ids, answer
        )

    async def answer(self, user: CurrentUser, message: str, conversation_id: str | None) -> dict:
        started = time.perf_counter()
        turn = await self.prepare(user, message, conversation_id)
        try:
            result = await self._llm.chat(
                turn.messages,
                max_tokens=self._answer_tokens,
                temperature=self._answer_temperature,
                stop=self._answer_stop,
                conversation_id=turn.conversation_id,
            )
        except LLMError as exc:
            await self._audit(user, turn, None)
            raise UpstreamUnavailable(f"the language model is unavailable: {exc}") from exc
        reply = await self._finish(user, turn, result.text.strip())
        self._metrics.chat_seconds.labels(mode="json").observe(time.perf_counter() - started)
        return reply

    async def stream(
        self, user: CurrentUser, message: str, conversation_id: str | None
    ) -> AsyncIterator[str]:
        """Prepare first (errors become normal HTTP errors), then yield SSE events."""
        started = time.perf_counter()
        turn = await self.prepare(user, message, conversation_id)

        async def events() -> AsyncIterator[str]:
            pieces: list[str] = []
            try:
                async for piece in self._llm.stream_chat(
                    turn.messages,
                    max_tokens=self._answer_tokens,
                    temperature=self._answer_temperature,
                    stop=self._answer_stop,
                    conversation_id=turn.conversation_id,
                ):
                    pieces.append(piece)
                    yield sse_event("token", {"text": piece})
            except LLMError as exc:
                await self._audit(user, turn, None)
                yield sse_event(
                    "error",
                    {
                        "code": "upstream_unavailable",
                        "message": f"the language model is unavailable: {exc}",
                    },
                )
                return
            reply = await self._finish(user, turn, "".join(pieces).strip())
            yield sse_event(
                "citations", {"citations": reply["citations"], "sources": reply["sources"]}
            )
            self._metrics.chat_seconds.labels(mode="stream").observe(time.perf_counter() - started)
            yield sse_event(
                "done",
                {
                    key: reply[key]
                    for key in ("conversation_id", "message_id", "answer", "declined")
                },
            )

        return events()
