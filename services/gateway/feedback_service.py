"""Answer feedback: a user's thumbs up/down (+ comment) on an answer, and its JSONL export.

One rating per user and answer (a second vote replaces the first). The export joins each
rating to the question that was asked and the answer and citations that were shown, which
is what an evaluation set needs; it is for admins, since it holds every user's questions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.db import Conversation, Feedback, Message
from services.gateway.auth_service import CurrentUser
from services.gateway.conversations_service import ConversationsService
from services.gateway.errors import NotFound


def feedback_json(feedback: Feedback) -> dict:
    return {
        "id": feedback.id,
        "message_id": feedback.message_id,
        "rating": feedback.rating,
        "comment": feedback.comment,
        "created_at": feedback.created_at.isoformat(),
    }


class FeedbackService:
    def __init__(self, sessions: sessionmaker):
        self._sessions = sessions

    def rate(self, user: CurrentUser, message_id: str, rating: str, comment: str | None) -> dict:
        """Store (or replace) the caller's rating of an answer in one of their conversations."""
        comment = (comment or "").strip() or None
        with self._sessions.begin() as session:
            message = session.get(Message, message_id)
            conversation = message and session.get(Conversation, message.conversation_id)
            if (
                message is None
                or message.role != "assistant"
                or conversation is None
                or conversation.username != user.username
            ):
                raise NotFound(f"no answer with id {message_id}")
            feedback = session.scalar(
                select(Feedback).where(
                    Feedback.message_id == message_id, Feedback.username == user.username
                )
            )
            if feedback is None:
                feedback = Feedback(message_id=message_id, username=user.username)
                session.add(feedback)
            feedback.rating, feedback.comment = rating, comment
            session.flush()
            return feedback_json(feedback)

    def export_lines(self) -> Iterator[str]:
        """Every rating as one JSON line: question, answer, citations, rating, comment, who, when."""
        with self._sessions() as session:
            rows = session.execute(
                select(Feedback, Message)
                .join(Message, Message.id == Feedback.message_id)
                .order_by(Feedback.created_at)
            ).all()
            for feedback, answer in rows:
                turns = ConversationsService.messages(session, answer.conversation_id)
                position = next(i for i, m in enumerate(turns) if m.id == answer.id)
                question = next(
                    (m.content for m in reversed(turns[:position]) if m.role == "user"), ""
                )
                record = {
                    **feedback_json(feedback),
                    "username": feedback.username,
                    "conversation_id": answer.conversation_id,
                    "question": question,
                    "answer": answer.content,
                    "citations": answer.citations or [],
                }
                yield json.dumps(record, ensure_ascii=False) + "\n"
