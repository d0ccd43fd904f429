"""The lexical index in PostgreSQL full-text search: one index shared by every host.

Same interface as ``ingest.stores.lexical.LexicalIndex`` (SQLite FTS5, the embedded
default), for the server profile where several workers and gateways on several hosts
write and read one index. A stored ``tsvector`` column (heading weighted 'A', body 'B')
with a GIN index carries the search; the caller's access scope is part of the SQL
(``AccessScope.postgres_where``), as in FTS5. Connections come from a SQLAlchemy pool
with pre-ping, so a PostgreSQL restart costs the next call a reconnect, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError

from ingest.chunking import Chunk
from ingest.errors import IngestError
from ingest.stores.acl import chunk_acl_column
from ingest.stores.lexical import (
    BODY_WEIGHT,
    CHUNK_FIELDS,
    HEADING_WEIGHT,
    ROW_FIELDS,
    content_words,
)

SCHEMA_VERSION = 1
_TEXT_CONFIG = "english"  # stemming + stopwords, like FTS5's porter tokenizer
# ts_rank weights are {D, C, B, A}; heading is A, body B, with FTS5's 2:1 ratio.
_RANK_WEIGHTS = f"'{{0, 0, {BODY_WEIGHT / HEADING_WEIGHT}, 1.0}}'::float4[]"
# Rank normalisation 1 divides by 1 + log(length): long chunks do not win by mass alone.
_RANK_NORMALISATION = 1
_SCHEMA_LOCK = 0x656E636C  # advisory lock id: concurrent first starts create the schema once
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS lexical_chunks (
        id BIGSERIAL PRIMARY KEY,
        chunk_id TEXT NOT NULL UNIQUE,
        document_id TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        title TEXT NOT NULL,
        page INTEGER,
        section TEXT,
        heading TEXT NOT NULL,
        text TEXT NOT NULL,
        is_public INTEGER NOT NULL,
        acl TEXT NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS (
            setweight(to_tsvector('english', heading), 'A')
            || setweight(to_tsvector('english', text), 'B')
        ) STORED
    )""",
    "CREATE INDEX IF NOT EXISTS lexical_chunks_by_document"
    " ON lexical_chunks (document_id, ordinal)",
    "CREATE INDEX IF NOT EXISTS lexical_chunks_tsv ON lexical_chunks USING GIN (tsv)",
    "CREATE TABLE IF NOT EXISTS lexical_schema (version INTEGER NOT NULL)",
]


class PostgresScopeFilter(Protocol):
    """What the index needs of an access scope (ingest.stores.acl.AccessScope)."""

    def postgres_where(
        self, public_column: str = ..., acl_column: str = ...
    ) -> tuple[str, dict[str, str]]: ...


def tsquery_expression(query: str) -> str | None:
    """A ``to_tsquery`` string for free text: the content words joined by OR (``|``).

    Words are ``\\w+`` runs, quoted, so tsquery syntax in a question (``&``, ``!``, ``:*``,
    parentheses) is searched as words and never raises. None when nothing is left.
    """
    words = content_words(query)
    if not words:
        return None
    return " | ".join("'" + w.replace("'", "''").replace("\\", "\\\\") + "'" for w in words)


class PostgresLexicalIndex:
    """Full-text search over chunk text and its title/section heading (weighted higher)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, str):
            if not url_or_engine.startswith("postgresql"):
                raise IngestError(
                    "The PostgreSQL lexical index needs a postgresql:// database URL, "
                    f"not {url_or_engine.split(':', 1)[0]}://; set the SQL database to PostgreSQL "
                    "or use the sqlite lexical backend."
                )
            self.engine = create_engine(url_or_engine, pool_pre_ping=True, pool_size=4)
        else:
            self.engine = url_or_engine
        self._ready = False

    def _prepare(self) -> None:
        if self._ready:
            return
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SCHEMA_LOCK})
            for statement in _SCHEMA:
                conn.execute(text(statement))
            version = conn.execute(text("SELECT max(version) FROM lexical_schema")).scalar()
            if version is None:
                conn.execute(
                    text("INSERT INTO lexical_schema (version) VALUES (:v)"), {"v": SCHEMA_VERSION}
                )
            elif version != SCHEMA_VERSION:
                raise IngestError(
                    f"The PostgreSQL lexical index has schema version {version}, this Enclave "
                    f"needs {SCHEMA_VERSION}; drop the lexical_chunks table and re-ingest."
                )
        self._ready = True

    def _rows(self, sql: str, params: dict[str, Any]) -> list[Any]:
        self._prepare()
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def reachable(self) -> bool:
        """Whether PostgreSQL answers now."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not now"
            return False

    def add(self, chunks: list[Chunk], groups: Iterable[str] = ()) -> None:
        """Index chunks (all of one document) in one transaction, readable by ``groups``."""
        self._prepare()
        is_public, acl = chunk_acl_column(groups)
        rows = [
            {
                "chunk_id": c.chunk_id,
                "document_id": c.document_id,
                "ordinal": c.ordinal,
                "title": c.title,
                "page": c.page,
                "section": c.section,
                "heading": c.heading,
                "text": c.text,
                "is_public": is_public,
                "acl": acl,
            }
            for c in chunks
        ]
        if not rows:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO lexical_chunks (chunk_id, document_id, ordinal, title, page,"
                        " section, heading, text, is_public, acl) VALUES (:chunk_id, :document_id,"
                        " :ordinal, :title, :page, :section, :heading, :text, :is_public, :acl)"
                    ),
                    rows,
                )
        except IntegrityError as exc:
            raise IngestError(
                f"Chunks of this document are already indexed ({exc.orig}); delete it first."
            ) from exc

    def delete_document(self, document_id: str) -> int:
        """Remove every chunk of a document; returns how many were removed (0 is fine)."""
        self._prepare()
        with self.engine.begin() as conn:
            result = conn.execute(
                text("DELETE FROM lexical_chunks WHERE document_id = :d"), {"d": document_id}
            )
            return result.rowcount

    def set_acl(self, document_id: str, acl_columns: tuple[int, str]) -> int:
        """Rewrite the ACL of every chunk of a document in one transaction; returns the count."""
        self._prepare()
        is_public, acl = acl_columns
        with self.engine.begin() as conn:
            result = conn.execute(
                text("UPDATE lexical_chunks SET is_public = :p, acl = :a WHERE document_id = :d"),
                {"p": is_public, "a": acl, "d": document_id},
            )
            return result.rowcount

    def search(self, query: str, k: int, scope: PostgresScopeFilter) -> list[tuple[str, float]]:
        """Best ``k`` (chunk_id, score) the scope may read; higher score is better."""
        expression = tsquery_expression(query)
        if expression is None or k <= 0:
            return []
        acl_sql, acl_params = scope.postgres_where("c.is_public", "c.acl")
        sql = (
            f"SELECT c.chunk_id, ts_rank({_RANK_WEIGHTS}, c.tsv, q, {_RANK_NORMALISATION}) AS rank"
            f" FROM lexical_chunks c, to_tsquery('{_TEXT_CONFIG}', :expression) q"
            f" WHERE c.tsv @@ q AND {acl_sql} ORDER BY rank DESC, c.id LIMIT :k"
        )
        rows = self._rows(sql, {"expression": expression, "k": k, **acl_params})
        return [(chunk_id, float(rank)) for chunk_id, rank in rows]

    def get(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """Chunks by id (ids not indexed are left out)."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        rows = self._rows(
            "SELECT chunk_id, document_id, ordinal, text, title, page, section"
            " FROM lexical_chunks WHERE chunk_id = ANY(:ids)",
            {"ids": ids},
        )
        return {row[0]: Chunk(*row) for row in rows}

    def document_chunk_ids(self, document_id: str) -> list[str]:
        """Ids of a document's chunks in reading order."""
        rows = self._rows(
            "SELECT chunk_id FROM lexical_chunks WHERE document_id = :d ORDER BY ordinal",
            {"d": document_id},
        )
        return [r[0] for r in rows]

    def count(self, document_id: str | None = None) -> int:
        """Number of chunks indexed, in all or in one document."""
        if document_id is None:
            return self._rows("SELECT count(*) FROM lexical_chunks", {})[0][0]
        return self._rows(
            "SELECT count(*) FROM lexical_chunks WHERE document_id = :d", {"d": document_id}
        )[0][0]

    def fts_count(self) -> int:
        """Rows with a searchable vector (equals count(): the vector is a generated column)."""
        return self._rows("SELECT count(*) FROM lexical_chunks WHERE tsv IS NOT NULL", {})[0][0]

    def export_rows(self) -> list[dict[str, Any]]:
        """Every indexed chunk with its ACL columns (backup), in insertion order."""
        rows = self._rows(f"SELECT {', '.join(ROW_FIELDS)} FROM lexical_chunks ORDER BY id", {})
        return [dict(r._mapping) for r in rows]

    def import_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows from ``export_rows`` (restore into an empty index); returns the count."""
        self._prepare()
        values = []
        for row in rows:
            chunk = Chunk(*(row[f] for f in CHUNK_FIELDS))
            values.append({**{f: row[f] for f in ROW_FIELDS}, "heading": chunk.heading})
        if values:
            columns = [*ROW_FIELDS, "heading"]
            with self.engine.begin() as conn:
                conn.execute(
                    text(
                        f"INSERT INTO lexical_chunks ({', '.join(columns)})"
                        f" VALUES ({', '.join(':' + c for c in columns)})"
                    ),
                    values,
                )
        return len(values)

    def close(self) -> None:
        self.engine.dispose()
