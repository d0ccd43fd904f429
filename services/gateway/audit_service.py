"""The audit trail for admins: who asked what, which chunks they were shown, what was answered.

Rows are only ever appended (by search and chat); this service reads them, with filters,
as JSON pages or one CSV file. The database refuses UPDATE and DELETE on the table
(triggers from migration 0002), so not even a bug here could rewrite history.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import sessionmaker

from services.db import AuditEntry

CSV_COLUMNS = ("created_at", "username", "action", "query", "chunk_ids", "answer")


def entry_json(entry: AuditEntry) -> dict:
    return {
        "id": entry.id,
        "username": entry.username,
        "action": entry.action,
        "query": entry.query,
        "chunk_ids": list(entry.chunk_ids or []),
        "answer": entry.answer,
        "created_at": entry.created_at.isoformat(),
    }


class AuditService:
    def __init__(self, sessions: sessionmaker):
        self._sessions = sessions

    @staticmethod
    def _select(
        username: str | None, since: datetime | None, until: datetime | None, text: str | None
    ) -> Select:
        statement = select(AuditEntry)
        if username:
            statement = statement.where(AuditEntry.username == username)
        if since is not None:
            statement = statement.where(AuditEntry.created_at >= since)
        if until is not None:
            statement = statement.where(AuditEntry.created_at < until)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            statement = statement.where(
                or_(
                    AuditEntry.query.ilike(pattern, escape="\\"),
                    AuditEntry.answer.ilike(pattern, escape="\\"),
                )
            )
        return statement.order_by(AuditEntry.created_at.desc(), AuditEntry.id)

    def entries(
        self,
        *,
        username: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict]:
        with self._sessions() as session:
            rows = session.scalars(
                self._select(username, since, until, text).limit(limit).offset(offset)
            )
            return [entry_json(e) for e in rows]

    def csv_lines(
        self,
        *,
        username: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
    ) -> Iterator[str]:
        """The matching entries as CSV, a header line first, read in pages."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue()
        offset, page = 0, 500
        while True:
            rows = self.entries(
                username=username, since=since, until=until, text=text, limit=page, offset=offset
            )
            if not rows:
                return
            buffer.seek(0)
            buffer.truncate()
            for row in rows:
                writer.writerow(
                    [
                        row["created_at"],
                        row["username"],
                        row["action"],
                        _csv_safe(row["query"]),
                        json.dumps(row["chunk_ids"]),
                        _csv_safe(row["answer"] or ""),
                    ]
                )
            yield buffer.getvalue()
            offset += page


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas: a cell starting with = + - @ is prefixed with a quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
