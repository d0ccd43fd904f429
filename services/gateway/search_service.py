"""Search: the caller's access scope, hybrid retrieval, and an audit line per query.

The ``HybridSearcher`` (embedding model + store handles) is built on first use and rebuilt
when the set of indexed documents changed since (another process, the worker, writes the
stores; rebuilding reopens them so new chunks are visible and deleted ones gone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services.db import AuditEntry, Job
from services.gateway.access import scope_for
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import BadRequest


def index_generation(sessions: sessionmaker) -> tuple:
    """Changes whenever a job finishes: cheap signal that the stores changed."""
    with sessions() as session:
        return tuple(session.execute(select(func.count(Job.id), func.max(Job.finished_at))
                                     .where(Job.state == "done")).one())


class SearcherProvider:
    """Hands out a searcher that has seen every finished job (thread-safe).

    ``factory(previous)`` builds a searcher, reusing what it can of ``previous``.
    """

    def __init__(self, factory: Callable[[Any], Any], generation: Callable[[], tuple]):
        self._factory = factory
        self._generation = generation
        self._lock = threading.Lock()
        self._searcher: Any = None
        self._seen: tuple | None = None

    def get(self) -> Any:
        with self._lock:
            current = self._generation()
            if self._searcher is None or current != self._seen:
                self._searcher = self._factory(self._searcher)
                self._seen = current
            return self._searcher

    @property
    def loaded(self) -> bool:
        return self._searcher is not None


def hit_json(hit: Any) -> dict:
    data = asdict(hit) if is_dataclass(hit) else dict(vars(hit))
    keys = ("chunk_id", "document_id", "title", "page", "section", "text", "score")
    out = {key: data.get(key) for key in keys}
    if out["score"] is not None:
        out["score"] = float(out["score"])
    return out


class SearchService:
    def __init__(self, sessions: sessionmaker, searchers: SearcherProvider, default_k: int):
        self._sessions = sessions
        self._searchers = searchers
        self._default_k = default_k

    def retrieve(self, query: str, k: int | None, user: CurrentUser) -> list[Any]:
        """Hits the user may see, best first (the ACL is part of the retrieval query)."""
        query = query.strip()
        if not query:
            raise BadRequest("query must not be empty")
        k = k or self._default_k
        if not 1 <= k <= 100:
            raise BadRequest("k must be between 1 and 100")
        return list(self._searchers.get().search(query, k, scope_for(user)))

    def search(self, query: str, k: int | None, user: CurrentUser) -> dict:
        hits = self.retrieve(query, k, user)
        self.audit(user, "search", query, [h.chunk_id for h in hits])
        return {"results": [hit_json(h) for h in hits]}

    def audit(self, user: CurrentUser, action: str, query: str, chunk_ids: list[str]) -> None:
        with self._sessions.begin() as session:
            session.add(AuditEntry(username=user.username, action=action, query=query[:10000],
                                   chunk_ids=list(chunk_ids)))
